"""The published optimiser and learning-rate schedule (docs/published_code.md, "Training")."""

from __future__ import annotations

import math

import torch
from fvcore.common.param_scheduler import ParamScheduler

__all__ = ["WarmupCosine", "adamw_param_groups", "build_adamw"]


def _no_decay(name: str, param: torch.nn.Parameter) -> bool:
    return param.ndim < 2 or any(k in name for k in ("bn", "ln", "bias", "logit_scale"))


def adamw_param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters in two groups: no weight decay for gains and biases (fewer than 2
    dimensions, or named bn/ln/bias/logit_scale), ``weight_decay`` for the rest, as published."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameter")
    return [
        {"params": [p for n, p in named if _no_decay(n, p)], "weight_decay": 0.0},
        {"params": [p for n, p in named if not _no_decay(n, p)], "weight_decay": weight_decay},
    ]


def build_adamw(
    model: torch.nn.Module,
    lr: float,
    weight_decay: float,
    betas=(0.9, 0.999),
    eps: float = 1e-8,
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """``fused`` (one kernel for all parameters' updates; the same arithmetic) defaults to on when
    every trainable parameter is on a CUDA device."""
    groups = adamw_param_groups(model, weight_decay)
    if fused is None:
        fused = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=fused or None)


class WarmupCosine(ParamScheduler):
    """The published schedule as an LR multiplier for detectron2's ``LRMultiplier``: at step s (the
    s-th optimiser step, from 0) of ``total`` steps, ``(s + 1) / warmup`` while ``s < warmup``, then
    ``0.5 * (1 + cos(pi * (s - warmup) / (total - warmup)))``."""

    def __init__(self, warmup: int, total: int):
        if not 0 <= warmup < total:
            raise ValueError(f"need 0 <= warmup ({warmup}) < total steps ({total})")
        self.warmup, self.total = warmup, total

    def __call__(self, where: float) -> float:
        step = round(where * self.total)
        if step < self.warmup:
            return (step + 1) / self.warmup
        return 0.5 * (1 + math.cos(math.pi * (step - self.warmup) / (self.total - self.warmup)))
