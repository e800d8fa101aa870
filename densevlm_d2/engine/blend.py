"""The published weight-space blend: saved and evaluated weights are ``alpha * trained + (1 - alpha)
* initial`` while training continues from the trained weights."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["blended_state", "blended_student"]


def blended_state(trained: dict, initial: dict, alpha: float) -> dict:
    """Blend two state dicts with the same keys; non-floating tensors are taken from ``trained``."""
    if set(trained) != set(initial):
        raise ValueError("cannot blend state dicts with different keys")
    out = {}
    for k, v in trained.items():
        if v.is_floating_point():
            out[k] = alpha * v + (1.0 - alpha) * initial[k].to(device=v.device, dtype=v.dtype)
        else:
            out[k] = v
    return out


@contextlib.contextmanager
def blended_student(model, alpha: float):
    """Inside the block the student CLIP holds the blended weights, afterwards the trained ones."""
    if alpha >= 1.0 or not hasattr(model, "initial_clip_state"):
        yield model
        return
    clip = model.backbone.clip
    trained = {k: v.detach().clone() for k, v in clip.state_dict().items()}
    with torch.no_grad():
        clip.load_state_dict(blended_state(trained, model.initial_clip_state, alpha))
    try:
        yield model
    finally:
        with torch.no_grad():
            clip.load_state_dict(trained)
