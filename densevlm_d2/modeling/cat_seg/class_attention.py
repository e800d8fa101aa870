"""Class cost aggregation: attention across the classes at every (pooled) position.

At each position of the cost embedding, the classes attend to each other (linear attention by
default), with each class's projected text embedding as guidance for its queries and keys. The map
is average-pooled first (2x2 in training, none at test time, as published) and the update is
upsampled back. The class sequence is padded with a learned token (and guidance) to a fixed length,
``pad_len``, so that the attention sees the same number of classes in training and on any test
vocabulary; larger vocabularies are cut to ``pad_len`` classes before aggregation
(:class:`~densevlm_d2.modeling.cat_seg.aggregator.CostAggregator`). The text guidance is the same at
every position: its part of the query and key projections is computed once per image and broadcast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ATTENTION_TYPES", "ClassAggregation", "GuidedAttention"]

ATTENTION_TYPES = ("linear", "full")


def linear_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """Linear attention ("Transformers are RNNs"), feature map elu + 1. (N, L, heads, D) each.
    Values are divided by their count and the result multiplied back (fp16 range)."""
    q, k = F.elu(q) + 1, F.elu(k) + 1
    length = v.shape[1]
    kv = torch.einsum("nshd,nshv->nhdv", k, v / length)
    z = 1.0 / (torch.einsum("nlhd,nhd->nlh", q, k.sum(dim=1)) + eps)
    return torch.einsum("nlhd,nhdv,nlh->nlhv", q, kv, z) * length


def full_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention, (N, L, heads, D) each."""
    scores = torch.einsum("nlhd,nshd->nlsh", q, k) / q.shape[-1] ** 0.5
    return torch.einsum("nlsh,nshd->nlhd", scores.softmax(dim=2), v)


class GuidedAttention(nn.Module):
    """Multi-head attention over a sequence; queries and keys from ``[x, guidance]`` (one linear
    layer each over the concatenation), values from ``x``; no output projection (as published)."""

    def __init__(self, dim: int, guidance_dim: int, num_heads: int, attention_type: str = "linear"):
        super().__init__()
        if attention_type not in ATTENTION_TYPES:
            raise ValueError(
                f"attention type must be one of {ATTENTION_TYPES}, got {attention_type!r}"
            )
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q = nn.Linear(dim + guidance_dim, dim)
        self.k = nn.Linear(dim + guidance_dim, dim)
        self.v = nn.Linear(dim, dim)
        self.attend = linear_attention if attention_type == "linear" else full_attention

    def forward(self, x: torch.Tensor, guidance: torch.Tensor | None) -> torch.Tensor:
        """``x``: (G * P, L, dim), P sequences per guidance; ``guidance``: (G, L, guidance_dim)
        or None."""
        n, length, c = x.shape
        q = F.linear(x, self.q.weight[:, :c], self.q.bias)
        k = F.linear(x, self.k.weight[:, :c], self.k.bias)
        if guidance is not None:
            groups = guidance.shape[0]
            gq = F.linear(guidance, self.q.weight[:, c:]).unsqueeze(1)
            gk = F.linear(guidance, self.k.weight[:, c:]).unsqueeze(1)
            q = (q.view(groups, -1, length, c) + gq).view(n, length, c)
            k = (k.view(groups, -1, length, c) + gk).view(n, length, c)
        shape = (n, length, self.num_heads, c // self.num_heads)
        q, k, v = q.view(shape), k.view(shape), self.v(x).view(shape)
        return self.attend(q, k, v).reshape(n, length, c)


class ClassAggregation(nn.Module):
    """Pre-norm attention across classes and an MLP, at each pooled position; the pooled update is
    upsampled (bilinear, corners aligned) and added to the input."""

    def __init__(
        self,
        dim: int,
        guidance_dim: int,
        num_heads: int,
        attention_type: str = "linear",
        pad_len: int = 256,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = GuidedAttention(dim, guidance_dim, num_heads, attention_type)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Linear(4 * dim, dim))
        self.pad_len = pad_len
        self.pad_token = nn.Parameter(torch.zeros(1, 1, dim)) if pad_len > 0 else None
        self.pad_guidance = (
            nn.Parameter(torch.zeros(1, 1, guidance_dim))
            if pad_len > 0 and guidance_dim > 0
            else None
        )

    def forward(
        self,
        x: torch.Tensor,
        guidance: torch.Tensor | None,
        pooling: tuple[int, int] = (1, 1),
    ) -> torch.Tensor:
        """``x``: (B, C, T, H, W); ``guidance``: (B, T, G) or None; ``pooling``: average-pooling
        kernel over (H, W) before the attention."""
        b, c, t, h, w = x.shape
        pooled = x.reshape(b, c * t, h, w)
        if tuple(pooling) != (1, 1):
            pooled = F.avg_pool2d(pooled, tuple(pooling))
        hp, wp = pooled.shape[-2:]
        seq = pooled.view(b, c, t, hp * wp).permute(0, 3, 2, 1).reshape(b * hp * wp, t, c)
        pad = self.pad_len - t if self.pad_token is not None else 0
        if pad > 0:
            seq = torch.cat([seq, self.pad_token.expand(seq.shape[0], pad, c)], dim=1)
        if guidance is not None and pad > 0 and self.pad_guidance is not None:
            guidance = torch.cat([guidance, self.pad_guidance.expand(b, pad, -1)], dim=1)
        seq = seq + self.attention(self.norm1(seq), guidance)
        seq = seq + self.mlp(self.norm2(seq))
        seq = seq[:, :t]
        update = seq.view(b, hp, wp, t, c).permute(0, 3, 4, 1, 2).reshape(b * t, c, hp, wp)
        update = F.interpolate(update, size=(h, w), mode="bilinear", align_corners=True)
        return x + update.view(b, t, c, h, w).transpose(1, 2)
