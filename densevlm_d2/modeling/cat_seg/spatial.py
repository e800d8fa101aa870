"""Spatial cost aggregation: Swin blocks over each class's cost map, guided by image features.

Each class's (C, H, W) embedded cost map is aggregated on its own by two Swin Transformer blocks
(windows of ``window`` tokens, the second shifted by half a window). The queries and keys see the
cost embedding concatenated with the projected CLIP features of the image (appearance guidance);
the values are the cost embedding alone, so the guidance steers where to look without being mixed
into the output. Shifted windows use Swin's region mask (-100 between tokens that come from
different image regions after the cyclic shift).

The guidance is the same for every class of an image: its part of the query and key projections
(the guidance columns of their weights, the published layout) is computed once per image and
broadcast over the classes, instead of concatenating a copy of the guidance to every class's map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn

__all__ = ["GuidedWindowAttention", "SpatialAggregation", "SwinGuidedBlock", "window_region_mask"]


def _windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """(N, H, W, C) -> (N * H/window * W/window, window * window, C)."""
    n, h, w, c = x.shape
    x = x.view(n, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def _unwindow(x: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`_windows`: -> (N, H, W, C)."""
    c = x.shape[-1]
    x = x.view(-1, h // window, w // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def window_region_mask(size: tuple[int, int], window: int, shift: int) -> torch.Tensor | None:
    """(num_windows, window², window²) additive mask for shifted windows: 0 within a region of the
    cyclically shifted map, -100 across regions; None without a shift."""
    if shift == 0:
        return None
    h, w = size
    regions = torch.zeros(1, h, w, 1)
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for rows in bounds:
        for cols in bounds:
            regions[:, rows, cols, :] = label
            label += 1
    ids = _windows(regions, window).squeeze(-1)  # (num_windows, window²)
    diff = ids.unsqueeze(1) - ids.unsqueeze(2)
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


def _add_per_map(x: torch.Tensor, g: torch.Tensor, num_windows: int) -> torch.Tensor:
    """``x`` (G * T * W, L, C) + ``g`` (G * W, L, C) broadcast over the T maps of each of the G
    guidance maps (W windows per map)."""
    groups = g.shape[0] // num_windows
    out = x.view(groups, -1, num_windows, *x.shape[1:]) + g.view(
        groups, 1, num_windows, *g.shape[1:]
    )
    return out.view(x.shape)


class GuidedWindowAttention(nn.Module):
    """Multi-head attention within a window; queries and keys from ``[x, guidance]`` (one linear
    layer each over the concatenation), values from ``x``."""

    def __init__(self, dim: int, guidance_dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not divisible by {num_heads} heads")
        self.dim, self.num_heads = dim, num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim + guidance_dim, dim)
        self.k = nn.Linear(dim + guidance_dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        n, length, _ = t.shape
        return t.view(n, length, self.num_heads, -1).transpose(1, 2)

    def guidance_terms(self, guidance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The guidance's part of the query and key projections (no bias)."""
        d = self.dim
        return F.linear(guidance, self.q.weight[:, d:]), F.linear(guidance, self.k.weight[:, d:])

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        guidance: tuple[torch.Tensor, torch.Tensor] | None = None,
        num_windows: int = 1,
    ) -> torch.Tensor:
        """``x``: (G * T * num_windows, window², dim): the windows of T maps per guidance map;
        ``guidance``: :meth:`guidance_terms` of the G guidance maps' windows, (G * num_windows,
        window², dim) each, or None; ``mask``: see :func:`window_region_mask`."""
        n, length, _ = x.shape
        d = self.dim
        q = F.linear(x, self.q.weight[:, :d], self.q.bias)
        k = F.linear(x, self.k.weight[:, :d], self.k.bias)
        if guidance is not None:
            q = _add_per_map(q, guidance[0], num_windows)
            k = _add_per_map(k, guidance[1], num_windows)
        q = self._heads(q) * self.scale
        k = self._heads(k)
        v = self._heads(self.v(x))
        attn = q @ k.transpose(-2, -1)
        if mask is not None:
            windows = mask.shape[0]
            attn = attn.view(n // windows, windows, self.num_heads, length, length)
            attn = (attn + mask[None, :, None]).view(n, self.num_heads, length, length)
        out = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(n, length, self.dim)
        return self.proj(out)


class SwinGuidedBlock(nn.Module):
    """A (shifted-)window Swin block with appearance guidance: pre-norm attention and MLP, each
    with a residual."""

    def __init__(
        self,
        dim: int,
        guidance_dim: int,
        size: tuple[int, int],
        num_heads: int,
        window: int,
        shift: int = 0,
        mlp_ratio: float = 4.0,
    ):
        super().__init__()
        self.size = tuple(size)
        if min(self.size) <= window:  # one window covers the map: nothing to shift
            window, shift = min(self.size), 0
        if self.size[0] % window or self.size[1] % window:
            raise ValueError(f"feature map {self.size} is not a whole number of {window}-windows")
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = GuidedWindowAttention(dim, guidance_dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)
        self.register_buffer("attn_mask", window_region_mask(self.size, window, shift), False)

    def _shift_windows(self, t: torch.Tensor) -> torch.Tensor:
        if self.shift:
            t = torch.roll(t, shifts=(-self.shift, -self.shift), dims=(1, 2))
        return _windows(t, self.window)

    def forward(self, x: torch.Tensor, guidance: torch.Tensor | None) -> torch.Tensor:
        """``x``: (G * T, H*W, dim), the maps of T classes per image; ``guidance``: (G, H*W,
        guidance_dim), one per image, or None."""
        h, w = self.size
        n, length, c = x.shape
        if length != h * w:
            raise ValueError(f"expected {h}x{w} tokens, got {length}")
        y = self._shift_windows(self.norm1(x).view(n, h, w, c))
        terms = None
        if guidance is not None:
            g = self._shift_windows(guidance.view(guidance.shape[0], h, w, -1))
            terms = self.attn.guidance_terms(g)
        num_windows = (h // self.window) * (w // self.window)
        y = self.attn(y, self.attn_mask, terms, num_windows)
        y = _unwindow(y, self.window, h, w)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + y.reshape(n, length, c)
        return x + self.mlp(self.norm2(x))


class SpatialAggregation(nn.Module):
    """Two Swin blocks (plain, then shifted by half a window) over every class's cost map."""

    def __init__(
        self, dim: int, guidance_dim: int, size: tuple[int, int], num_heads: int, window: int
    ):
        super().__init__()
        self.block1 = SwinGuidedBlock(dim, guidance_dim, size, num_heads, window, 0)
        self.block2 = SwinGuidedBlock(dim, guidance_dim, size, num_heads, window, window // 2)
        self.guidance_norm = nn.LayerNorm(guidance_dim) if guidance_dim > 0 else None

    def forward(self, x: torch.Tensor, guidance: torch.Tensor | None) -> torch.Tensor:
        """``x``: (B, C, T, H, W) cost embedding of T classes; ``guidance``: (B, G, H, W)."""
        b, c, t, h, w = x.shape
        x = x.permute(0, 2, 3, 4, 1).reshape(b * t, h * w, c)
        g = None
        if guidance is not None:  # normalised once per image, shared by its classes
            g = self.guidance_norm(guidance.flatten(2).transpose(1, 2))  # (B, H*W, G)
        x = self.block2(self.block1(x, g), g)
        return x.view(b, t, h, w, c).permute(0, 4, 1, 2, 3)
