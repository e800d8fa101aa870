"""Frozen vision towers stored in half precision, computing as the published AMP does.

Automatic mixed precision (``torch.autocast``, float16 in the published recipes) rounds the weights
of every linear layer and convolution to half precision each time it uses them, and keeps norms,
softmax and their parameters in float32. A frozen tower gains nothing from
keeping float32 copies of those weights: :func:`store_matmul_weights` stores them in half
precision (rounded as autocast rounds them), and the tower then runs under autocast in that
precision (:class:`~densevlm_d2.modeling.CLIPViTBackbone`), so its results are those of the AMP run
of the float32 tower, whether the training itself uses AMP or not.

State dicts of such a model hold float32 tensors (:func:`float32_state_dict`): checkpoints,
exports and strict loads look as they do for a float32 model; loading float32 weights back rounds
them to the stored precision again.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["PRECISIONS", "float32_state_dict", "parse_precision", "store_matmul_weights"]

#: the precisions a frozen tower can be stored in, by config spelling
PRECISIONS = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def parse_precision(name: str, key: str = "precision") -> torch.dtype:
    """A config spelling -> dtype; a clear error naming ``key`` for anything else."""
    if name not in PRECISIONS:
        raise ValueError(f"{key} must be one of {sorted(PRECISIONS)}, got {name!r}")
    return PRECISIONS[name]


def store_matmul_weights(module: nn.Module, dtype: torch.dtype) -> int:
    """Store the weights and biases of ``module``'s linear layers and convolutions in ``dtype``
    (what autocast would round them to); returns how many tensors changed.

    ``nn.MultiheadAttention``'s input projection (OpenAI-style towers) stays float32: with every
    tensor in half precision PyTorch takes its fused inference path, which computes differently
    from the AMP run."""
    params = []
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d):
            params += [m.weight, m.bias]
    changed = 0
    for p in params:
        if p is not None and p.dtype != dtype:
            p.data = p.data.to(dtype)
            changed += 1
    return changed


def _to_float32(module, state_dict, prefix, local_metadata) -> None:
    for k, v in state_dict.items():
        if k.startswith(prefix) and v.dtype in (torch.float16, torch.bfloat16):
            state_dict[k] = v.float()


def float32_state_dict(module: nn.Module) -> None:
    """Make ``module.state_dict()`` (and every state dict that contains it) give its half-precision
    tensors as float32."""
    module.register_state_dict_post_hook(_to_float32)
