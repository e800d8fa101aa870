"""CAT-Seg's cost aggregator: cost volume -> spatial and class aggregation -> upsampling decoder.

Given the CLIP's dense map of an image, the text embeddings of T classes (P prompts each) and
guidance features, :class:`CostAggregator` computes one logit map per class:

1. cost volume: cosine similarity of every image token with every class/prompt embedding,
   (B, P, T, H, W); with more than ``pad_len`` classes only the ``pad_len`` classes of highest
   maximum similarity are aggregated and the rest get a logit of -100;
2. a 7x7 convolution embeds each class's P-channel cost map into ``hidden_dim`` channels;
3. ``num_layers`` x (spatial aggregation guided by the projected dense map, class aggregation
   guided by the projected text embeddings);
4. two upsampling stages (transposed convolution x2, concatenated projected decoder guidance, two
   3x3 convolutions with GroupNorm and ReLU) and a 3x3 convolution to one logit per class, at 4x
   the token resolution.

With ``grad_checkpointing``, each aggregator layer and each upsampling stage keeps only its input
for the backward pass and recomputes the rest (:mod:`densevlm_d2.utils.activation_checkpointing`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...utils.activation_checkpointing import checkpointed
from .class_attention import ClassAggregation
from .spatial import SpatialAggregation

__all__ = ["AggregatorLayer", "CostAggregator", "UpBlock"]


class AggregatorLayer(nn.Module):
    """Spatial aggregation, then class aggregation."""

    def __init__(
        self,
        hidden_dim: int,
        appearance_dim: int,
        text_dim: int,
        size: tuple[int, int],
        num_heads: int,
        window: int,
        attention_type: str,
        pad_len: int,
    ):
        super().__init__()
        self.spatial = SpatialAggregation(hidden_dim, appearance_dim, size, num_heads, window)
        self.classes = ClassAggregation(hidden_dim, text_dim, num_heads, attention_type, pad_len)

    def forward(self, x, appearance, text, pooling=(1, 1)):
        return self.classes(self.spatial(x, appearance), text, pooling)


class _DoubleConv(nn.Sequential):
    """(3x3 convolution without bias, GroupNorm of 16-channel groups, ReLU) x 2."""

    def __init__(self, in_channels: int, out_channels: int):
        if out_channels % 16:
            raise ValueError(f"decoder channels must be multiples of 16, got {out_channels}")
        groups = out_channels // 16
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.GroupNorm(groups, out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.GroupNorm(groups, out_channels),
            nn.ReLU(inplace=True),
        )


class UpBlock(nn.Module):
    """x2 transposed convolution to ``in_channels - guidance_channels`` channels, the guidance
    concatenated (the same for every class of an image), then :class:`_DoubleConv`."""

    def __init__(self, in_channels: int, out_channels: int, guidance_channels: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(
            in_channels, in_channels - guidance_channels, kernel_size=2, stride=2
        )
        self.conv = _DoubleConv(in_channels, out_channels)

    def forward(self, x: torch.Tensor, guidance: torch.Tensor | None) -> torch.Tensor:
        """``x``: (B*T, C, H, W) with the classes of an image consecutive; ``guidance``: (B, G, 2H,
        2W)."""
        x = self.up(x)
        if guidance is not None:
            repeats = x.shape[0] // guidance.shape[0]
            x = torch.cat([x, guidance.repeat_interleave(repeats, dim=0)], dim=1)
        return self.conv(x)


def _conv_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU())


class CostAggregator(nn.Module):
    """See the module docstring. Published settings: ``hidden_dim`` 128, text and appearance
    guidance projected to 128, decoder (64, 32) with guidance (256, 128) -> (32, 16) channels,
    2 layers, 4 heads, window 12 on a 24x24 map, linear class attention, ``pad_len`` 256.
    ``grad_checkpointing``: see the module docstring."""

    def __init__(
        self,
        *,
        embed_dim: int,
        num_prompts: int = 1,
        feature_size: Sequence[int] = (24, 24),
        hidden_dim: int = 128,
        text_guidance_dim: int = 128,
        appearance_guidance_dim: int = 128,
        decoder_dims: Sequence[int] = (64, 32),
        decoder_guidance_dims: Sequence[int] = (256, 128),
        decoder_guidance_proj_dims: Sequence[int] = (32, 16),
        num_layers: int = 2,
        num_heads: int = 4,
        window: int = 12,
        attention_type: str = "linear",
        pad_len: int = 256,
        grad_checkpointing: bool = False,
    ):
        super().__init__()
        self.grad_checkpointing = grad_checkpointing
        if len(decoder_dims) != 2 or len(decoder_guidance_dims) != 2:
            raise ValueError("the decoder has two stages: two DECODER_DIMS and guidance dims")
        size = tuple(feature_size)
        self.pad_len = pad_len
        self.num_prompts = num_prompts
        self.embed = nn.Conv2d(num_prompts, hidden_dim, kernel_size=7, padding=3)
        self.appearance_proj = (
            _conv_relu(embed_dim, appearance_guidance_dim) if appearance_guidance_dim else None
        )
        self.text_proj = (
            nn.Sequential(nn.Linear(embed_dim, text_guidance_dim), nn.ReLU())
            if text_guidance_dim
            else None
        )
        self.decoder_guidance_proj = (
            nn.ModuleList(
                _conv_relu(d, p)
                for d, p in zip(decoder_guidance_dims, decoder_guidance_proj_dims, strict=True)
            )
            if decoder_guidance_dims[0]
            else None
        )
        self.layers = nn.ModuleList(
            AggregatorLayer(
                hidden_dim,
                appearance_guidance_dim,
                text_guidance_dim,
                size,
                num_heads,
                window,
                attention_type,
                pad_len,
            )
            for _ in range(num_layers)
        )
        proj = list(decoder_guidance_proj_dims) if self.decoder_guidance_proj else [0, 0]
        self.up1 = UpBlock(hidden_dim, decoder_dims[0], proj[0])
        self.up2 = UpBlock(decoder_dims[0], decoder_dims[1], proj[1])
        self.head = nn.Conv2d(decoder_dims[1], 1, kernel_size=3, padding=1)

    @staticmethod
    def cost_volume(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Cosine similarities: image (B, C, H, W), text (B, T, P, C) -> (B, P, T, H, W)."""
        image = F.normalize(image, dim=1)
        text = F.normalize(text, dim=-1)
        return torch.einsum("bchw,btpc->bpthw", image, text)

    def select_classes(
        self, cost: torch.Tensor, text: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """With more than ``pad_len`` classes: the ``pad_len`` of highest maximum similarity (their
        cost maps, unit-norm text embeddings and indices); otherwise everything, indices None."""
        t = text.shape[1]
        if self.pad_len <= 0 or t <= self.pad_len:
            return cost, text, None
        score = cost.transpose(1, 2).flatten(2).amax(dim=-1)  # (B, T)
        keep = score.topk(self.pad_len, dim=-1).indices  # (B, pad_len)
        index = keep[:, :, None, None].expand(-1, -1, text.shape[2], text.shape[3])
        text = torch.gather(F.normalize(text, dim=-1), 1, index)
        cost_index = keep[:, None, :, None, None].expand(-1, cost.shape[1], -1, *cost.shape[-2:])
        return torch.gather(cost, 2, cost_index), text, keep

    def forward(
        self,
        image: torch.Tensor,
        text: torch.Tensor,
        guidance: Sequence[torch.Tensor | None],
        pooling: Sequence[int] = (1, 1),
    ) -> torch.Tensor:
        """``image``: (B, C, H, W) dense CLIP map; ``text``: (B, T, P, C) class embeddings;
        ``guidance``: (appearance (B, C, H, W), decoder guidance at 2x, at 4x); ``pooling``: the
        class aggregation's pooling. Returns (B, T, 4H, 4W) logits."""
        if text.shape[2] != self.num_prompts:
            raise ValueError(
                f"the aggregator was built for {self.num_prompts} prompts per class, got "
                f"{text.shape[2]}"
            )
        b, t = text.shape[:2]
        cost, text, keep = self.select_classes(self.cost_volume(image, text), text)
        k = cost.shape[2]
        x = self.embed(cost.transpose(1, 2).flatten(0, 1))  # (B*K, hidden, H, W)
        x = x.view(b, k, *x.shape[1:]).transpose(1, 2)  # (B, hidden, K, H, W)
        appearance = self.appearance_proj(guidance[0]) if self.appearance_proj else None
        decoder_guidance = (
            [proj(g) for proj, g in zip(self.decoder_guidance_proj, guidance[1:], strict=True)]
            if self.decoder_guidance_proj
            else [None, None]
        )
        text_guidance = (
            self.text_proj(F.normalize(text.mean(dim=2), dim=-1)) if self.text_proj else None
        )
        ckpt = self.grad_checkpointing
        for layer in self.layers:
            x = checkpointed(layer, x, appearance, text_guidance, pooling, enabled=ckpt)
        x = x.transpose(1, 2).flatten(0, 1)  # (B*K, hidden, H, W)
        x = checkpointed(self.up1, x, decoder_guidance[0], enabled=ckpt)
        x = checkpointed(self.up2, x, decoder_guidance[1], enabled=ckpt)
        logits = self.head(x).view(b, k, *x.shape[-2:])
        if keep is None:
            return logits
        out = logits.new_full((b, t, *logits.shape[-2:]), -100.0)
        return out.scatter(1, keep[:, :, None, None].expand_as(logits), logits)
