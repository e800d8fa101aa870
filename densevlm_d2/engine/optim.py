"""The published optimiser and learning-rate schedule (docs/published_code.md, "Training")."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from detectron2.solver.build import maybe_add_gradient_clipping
from fvcore.common.param_scheduler import ParamScheduler

__all__ = ["WarmupCosine", "adamw_param_groups", "add_gradient_clipping", "build_adamw"]


def _no_decay(name: str, param: torch.nn.Parameter) -> bool:
    return param.ndim < 2 or any(k in name for k in ("bn", "ln", "bias", "logit_scale"))


def adamw_param_groups(
    model: torch.nn.Module,
    weight_decay: float,
    lr: float | None = None,
    lr_multipliers: Mapping[int, float] | None = None,
) -> list[dict]:
    """Trainable parameters grouped by weight decay: none for gains and biases (fewer than 2
    dimensions, or named bn/ln/bias/logit_scale), ``weight_decay`` for the rest, as published.

    ``lr_multipliers`` (``id(parameter)`` -> factor, e.g. 0.01 for a CLIP under a new head) splits
    the groups further; each group then has its own ``lr`` (``lr`` x factor). Empty groups are left
    out."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameter")
    multipliers = lr_multipliers or {}
    groups: dict[tuple[bool, float], list[torch.nn.Parameter]] = {}
    for n, p in named:
        groups.setdefault((_no_decay(n, p), multipliers.get(id(p), 1.0)), []).append(p)
    out = []
    for (no_decay, factor), params in sorted(
        groups.items(), key=lambda kv: (not kv[0][0], -kv[0][1])
    ):
        group = {"params": params, "weight_decay": 0.0 if no_decay else weight_decay}
        if lr is not None and multipliers:
            group["lr"] = lr * factor
        out.append(group)
    return out


def build_adamw(
    model: torch.nn.Module,
    lr: float,
    weight_decay: float,
    betas=(0.9, 0.999),
    eps: float = 1e-8,
    fused: bool | None = None,
    lr_multipliers: Mapping[int, float] | None = None,
) -> torch.optim.AdamW:
    """``fused`` (one kernel for all parameters' updates; the same arithmetic) defaults to on when
    every trainable parameter is on a CUDA device. ``lr_multipliers``: see
    :func:`adamw_param_groups`."""
    groups = adamw_param_groups(model, weight_decay, lr, lr_multipliers)
    if fused is None:
        fused = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=fused or None)


def add_gradient_clipping(cfg, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """detectron2's ``SOLVER.CLIP_GRADIENTS`` ("value", "norm": each parameter on its own), plus
    ``CLIP_TYPE "full_model"``: the norm of all gradients together is clipped to ``CLIP_VALUE``
    (``torch.nn.utils.clip_grad_norm_``; CAT-Seg, DETR). Clipping runs inside ``step``, so after
    the AMP scaler has unscaled the gradients."""
    c = cfg.SOLVER.CLIP_GRADIENTS
    if not (c.ENABLED and c.CLIP_TYPE == "full_model"):
        return maybe_add_gradient_clipping(cfg, optimizer)
    if c.CLIP_VALUE <= 0:
        raise ValueError(f"SOLVER.CLIP_GRADIENTS.CLIP_VALUE must be > 0, got {c.CLIP_VALUE}")
    max_norm, norm_type = float(c.CLIP_VALUE), float(c.NORM_TYPE)
    base = type(optimizer)

    def step(self, closure=None):
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
        return base.step(self, closure)

    optimizer.__class__ = type(base.__name__ + "WithFullModelClipping", (base,), {"step": step})
    return optimizer


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
