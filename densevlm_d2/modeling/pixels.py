"""Pixel normalisation: the one place 0-255 images become a CLIP's input."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["PixelNormalizer"]


class PixelNormalizer(nn.Module):
    """``(x - mean) / std`` per channel (``MODEL.PIXEL_MEAN`` / ``MODEL.PIXEL_STD``, 0-255 scale) as
    float32, on the module's device; the buffers are not saved with the weights. Images are checked
    once, where they enter a model (:func:`check_image`), not on every normalisation."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if len(mean) != len(std) or not len(mean):
            raise ValueError(f"pixel mean {list(mean)} and std {list(std)} must match in length")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(-1, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(..., C, H, W) 0-255 images (any dtype, any device) -> normalised float32 on the
        module's device."""
        return (images.to(self.device).float() - self.mean) / self.std


def check_image(image: torch.Tensor, what: str = "image") -> None:
    """A clear error for an image tensor with no pixels or with pixels that are not finite."""
    if image.ndim < 3 or image.shape[-1] == 0 or image.shape[-2] == 0:
        raise ValueError(f"the {what} has no pixels: shape {tuple(image.shape)}")
    if image.is_floating_point() and not torch.isfinite(image).all():
        bad = int((~torch.isfinite(image)).sum())
        raise ValueError(f"the {what} has {bad} pixel values that are not finite (NaN or inf)")
