"""The published AdamW (two weight-decay groups), its fused form, the warm-up cosine schedule."""

from __future__ import annotations

import math

import pytest
import torch

from densevlm_d2.engine.optim import WarmupCosine, adamw_param_groups, build_adamw


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 4)
    )


def test_decay_only_for_matrices():
    groups = adamw_param_groups(_model(), weight_decay=0.1)
    assert [g["weight_decay"] for g in groups] == [0.0, 0.1]
    assert all(p.ndim < 2 for p in groups[0]["params"]) and len(groups[0]["params"]) == 4
    assert all(p.ndim == 2 for p in groups[1]["params"]) and len(groups[1]["params"]) == 2


def test_fused_only_by_default_on_cuda_and_the_same_updates():
    assert not build_adamw(_model(), 1e-3, 0.1).defaults["fused"]  # CPU parameters: the loop form
    x = torch.randn(32, 8)
    models = [_model(), _model()]
    opts = [build_adamw(m, 1e-2, 0.1, fused=f) for m, f in zip(models, (False, True), strict=True)]
    for _ in range(5):
        for m, opt in zip(models, opts, strict=True):
            opt.zero_grad()
            m(x).square().mean().backward()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(models[0][0].weight, _model()[0].weight)  # they did move


def test_warmup_cosine():
    sched = WarmupCosine(warmup=2, total=10)
    assert [sched(s / 10) for s in (0, 1)] == [0.5, 1.0]
    assert sched(2 / 10) == 1.0 and sched(6 / 10) == pytest.approx(
        0.5 * (1 + math.cos(math.pi / 2))
    )
    with pytest.raises(ValueError, match="warmup"):
        WarmupCosine(warmup=10, total=10)
