"""GPU memory of a training step, counted without a GPU and without allocating it.

A model is built under :func:`fake_modes`, its parameters fake tensors
(``torch._subclasses.fake_tensor.FakeTensorMode``: shapes, dtypes and storages, no data), then one
training forward and backward runs under autocast as the recipe says. What stays in memory between
the forward and the backward is what autograd saves: :func:`measure_step` counts the bytes of the
unique storages packed by ``torch.autograd.graph.saved_tensors_hooks`` (a view shares its base's
storage; parameters are left out, they are counted as weights; autocast's half-precision weight
copies are counted, they live as long as the graph). Inputs kept by ``torch.utils.checkpoint`` for
recomputation are saved tensors too (the non-reentrant checkpoint saves them through the same
hooks).

Fake tensors have no values, so an op whose output *size* depends on values (``nonzero``, a boolean
mask index, ``masked_select``, NMS) is answered at its largest (every element selected), and a
value read back into Python (``.item()``) is 1; constant tensors made from scratch (``arange``,
``linspace``, ``logspace``) and whatever is computed from real tensors alone are computed for
real, so that code reading them (timm's drop-path schedule) runs as usual. Selections at their
largest make the count an upper bound where a recipe selects (DenseVLM's confident regions;
detectron2's proposal sampling is bounded by its configured sizes anyway).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from unittest import mock

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_flatten
from torchvision.ops import boxes as tv_boxes

__all__ = [
    "StepMemory",
    "count_saved_tensors",
    "fake_modes",
    "largest_batch",
    "make_fake",
    "measure_step",
    "state_bytes",
]

GiB = 2**30

_aten = torch.ops.aten


def _tensor_bytes(t: torch.Tensor) -> int:
    return t.untyped_storage().nbytes()


class _LargestSelections(TorchDispatchMode):
    """Above a :class:`FakeTensorMode`: data-dependent sizes at their largest, ``.item()`` of a
    fake tensor 1, ops on real tensors and small constants real, and the largest tensor any op
    makes (:attr:`largest`, bytes; views such as an ``expand`` of a weight over a batch allocate
    nothing and are left out)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = self._answer(func, args, kwargs)
        if getattr(func, "is_view", False):
            return out  # a view (expand, transpose, ...) allocates nothing: its size is no peak
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel() * t.element_size())
        return out

    def _answer(self, func, args, kwargs):
        tensors = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        if (
            tensors
            and not any(isinstance(t, FakeTensor) for t in tensors)
            or (not tensors and _is_constant(func, args))
        ):
            with _disable_current_modes():  # real values, computed for real
                return func(*args, **kwargs)
        if func is _aten._local_scalar_dense.default:
            return _one(args[0].dtype)
        if func is _aten.nonzero.default:
            return args[0].new_zeros((args[0].numel(), args[0].dim()), dtype=torch.long)
        if func is _aten.masked_select.default:
            return args[0].new_empty((math.prod(torch.broadcast_shapes(*(a.shape for a in args))),))
        if func is _aten._unique2.default:  # every element distinct
            x = args[0]
            return (x.flatten().clone(), torch.zeros_like(x, dtype=torch.long),
                    x.new_ones((x.numel(),), dtype=torch.long))  # fmt: skip
        if func in _INDEXING:
            return func(args[0], _long_indices(args[1]), *args[2:], **kwargs)
        if func.namespace == "torchvision" and func.overloadpacket.__name__ == "nms":
            return torch.arange(args[0].shape[0], device=args[0].device)
        return func(*args, **kwargs)


_INDEXING = {_aten.index.Tensor, _aten.index_put_.default, _aten.index_put.default}
_CONSTANTS = {"arange", "linspace", "logspace", "scalar_tensor"}


def _is_constant(func, args) -> bool:
    return func.overloadpacket.__name__ in _CONSTANTS


def _one(dtype: torch.dtype):
    if dtype == torch.bool:
        return True
    return 1.0 if dtype.is_floating_point else 1


def _long_indices(indices) -> list:
    """Boolean mask indices as the long indices of all their elements (everything selected)."""
    out = []
    for index in indices:
        if index is not None and index.dtype in (torch.bool, torch.uint8):
            out += [index.new_zeros((index.numel(),), dtype=torch.long)] * index.dim()
        else:
            out.append(index)
    return out


@contextmanager
def fake_modes():
    """Fake CPU tensors (no data) with :class:`_LargestSelections` above them; yields
    ``(fake_mode, selections)``. ``Module.to`` to the CPU without a dtype is a no-op within (fake
    parameters cannot be swapped for themselves, as ``Module.to`` does)."""
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    with (
        fake,
        _LargestSelections() as selections,
        mock.patch.object(nn.Module, "to", _cpu_to),
        # torchvision's batched NMS loops over the classes present (data-dependent) above 4000
        # boxes on the CPU; its other route (one NMS over offset boxes) keeps as many here
        mock.patch.object(tv_boxes, "_batched_nms_vanilla", tv_boxes._batched_nms_coordinate_trick),
    ):
        yield fake, selections


_module_to = nn.Module.to


def _cpu_to(module: nn.Module, *args, **kwargs):
    device, dtype, _, memory_format = torch._C._nn._parse_to(*args, **kwargs)
    if dtype is None and memory_format is None and (device is None or device.type == "cpu"):
        return module
    return _module_to(module, *args, **kwargs)


def make_fake(model: torch.nn.Module, fake: FakeTensorMode) -> torch.nn.Module:
    """Every parameter and buffer of ``model`` that is still real (a small constant) made fake,
    so that all of them are known storages."""
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None and not isinstance(p, FakeTensor):
                module._parameters[name] = torch.nn.Parameter(
                    fake.from_tensor(p.detach()), requires_grad=p.requires_grad
                )
        for name, b in list(module._buffers.items()):
            if b is not None and not isinstance(b, FakeTensor):
                module._buffers[name] = fake.from_tensor(b)
    return model


@contextmanager
def count_saved_tensors(exclude=()):
    """Within: every tensor autograd saves for backward is recorded; yields a dict storage id ->
    bytes (unique storages; those of ``exclude``, e.g. the parameters, left out)."""
    skip = {t.untyped_storage()._cdata for t in exclude}
    saved: dict[int, int] = {}
    alive = []  # the saved tensors stay referenced: a freed storage's id could be reused

    def pack(t):
        key = t.untyped_storage()._cdata
        if key not in skip:
            saved[key] = _tensor_bytes(t)
            alive.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield saved


@dataclass(frozen=True)
class StepMemory:
    """One training step of one process: bytes saved for backward, largest single tensor."""

    saved: int
    largest: int


def measure_step(step, params, selections: _LargestSelections) -> StepMemory:
    """Runs ``step()`` (a forward returning the loss; its backward is run here) under the fake
    modes of :func:`fake_modes` (``selections``), counting the saved tensors."""
    selections.largest = 0
    with count_saved_tensors(exclude=params) as saved:
        loss = step()
    loss.backward()
    return StepMemory(saved=sum(saved.values()), largest=selections.largest)


def state_bytes(model: torch.nn.Module) -> dict[str, int]:
    """Weights (parameters and buffers), gradients of the trainable parameters (their dtype) and
    AdamW's state (two float32 moments per trainable parameter)."""
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    return {
        "weights": sum(p.numel() * p.element_size() for p in params)
        + sum(b.numel() * b.element_size() for b in model.buffers()),
        "grads": sum(p.numel() * p.element_size() for p in trainable),
        "optimizer": sum(2 * 4 * p.numel() for p in trainable),
    }


def largest_batch(fixed: float, per_image: float, budget: float) -> int:
    """The most images with ``fixed + images * per_image <= budget`` (0 if none fits)."""
    if per_image <= 0:
        raise ValueError(f"per-image bytes must be positive, got {per_image}")
    return max(0, math.floor((budget - fixed) / per_image))
