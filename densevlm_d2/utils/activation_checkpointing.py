"""Activation checkpointing: run a function so that autograd keeps only its inputs and recomputes
its activations in the backward pass (``torch.utils.checkpoint``, non-reentrant).

Two things the bare ``checkpoint`` call does not do, and every user here needs:

* it is skipped where nothing would be saved anyway (autograd off, at inference);
* batch norms inside ``module`` run twice in training (forward and recomputation) and would update
  their running statistics twice; the recomputation restores them, so a checkpointed run ends with
  the same running statistics as a plain one (the gradients are the same either way, as the
  recomputation sees the same batch).

Plain PyTorch: the CLIP towers (:mod:`densevlm_d2.clip.towers`) use it as well as the detectron2
heads.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

__all__ = ["SavedActivations", "checkpointed", "recompute_in_backward"]


def _batch_norm_buffers(module: nn.Module | None) -> list[torch.Tensor]:
    if module is None:
        return []
    return [b for m in module.modules() if isinstance(m, _BatchNorm) for b in m.buffers()]


def checkpointed(fn: Callable, *args, module: nn.Module | None = None, enabled: bool = True):
    """``fn(*args)``, checkpointed when ``enabled`` and autograd records (any arguments, tensors
    or not). ``module``: the module ``fn`` runs, whose batch-norm statistics the recomputation must
    leave as the forward pass left them."""
    if not enabled or not torch.is_grad_enabled():
        return fn(*args)
    buffers = _batch_norm_buffers(module)
    calls = 0

    def run(*inner):
        nonlocal calls
        calls += 1
        if calls == 1 or not buffers:
            return fn(*inner)
        saved = [b.clone() for b in buffers]  # the recomputation: statistics stay as they are
        try:
            return fn(*inner)
        finally:
            with torch.no_grad():
                for b, s in zip(buffers, saved, strict=True):
                    b.copy_(s)

    return checkpoint(run, *args, use_reentrant=False)


def _recomputing(function: Callable, self: nn.Module, *args):
    return checkpointed(function, self, *args, module=self)


def recompute_in_backward(module: nn.Module, method: str = "forward") -> nn.Module:
    """Make ``module``'s method (its class's ``method``, default ``forward``) checkpointed (see
    :func:`checkpointed`), for modules built by detectron2 whose calls this project does not write
    (the ROI heads' box and mask heads). The module's parameters, names and state dict do not
    change; a deep copy keeps the behaviour."""
    function = getattr(type(module), method)
    setattr(module, method, types.MethodType(functools.partial(_recomputing, function), module))
    return module


class SavedActivations:
    """Counts the memory autograd keeps for the backward pass while it is active: the bytes of
    every distinct storage saved by an operation (views share one), leaving out ``exclude``'s
    storages (the parameters, which exist anyway). ``bytes`` after the block::

        with SavedActivations(model.parameters()) as saved:
            loss = model(batch)
        print(saved.bytes)
    """

    def __init__(self, exclude=()):
        self._exclude = {t.untyped_storage().data_ptr() for t in exclude}
        self._storages: dict[int, int] = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr and ptr not in self._exclude:
            self._storages[ptr] = storage.nbytes()
        return t

    @property
    def bytes(self) -> int:
        return sum(self._storages.values())

    def __enter__(self) -> SavedActivations:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
