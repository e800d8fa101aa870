"""Dense and image features of open_clip vision towers at any input size.

A :class:`VisionTower` wraps the vision tower of an open_clip model (a timm ``Eva`` trunk for
EVA02-CLIP, open_clip's ``VisionTransformer`` for OpenAI-style ViTs) without copying it: it calls
the tower's own modules in the order of the published DenseVLM/CLIPSelf ``encode_dense``
(docs/published_code.md, "Dense features"):

1. patch embedding, CLS token, absolute position embedding resized bicubically
   (``align_corners=False``, no antialias) from the pretrained grid to the actual token grid; for
   EVA02 a RoPE table built for the actual grid with the published formula ``t = arange(n) / n *
   16`` per axis (rows and columns separately, so non-square grids work);
2. blocks ``0 .. L-2`` as usual;
3. the last block with its attention replaced by the value path alone (MaskCLIP-style): ``x +
   proj(norm(v(x)))`` then the MLP as usual (``dense_residual="cls"``: CAT-Seg's variant, the
   block input's CLS token added to every token instead of the token itself);
4. drop CLS, final norm, projection, L2-normalise every token, reshape to ``(B, D, H/p, W/p)``.

The same pass also gives the CLS image embedding (last block run normally) and intermediate block
outputs for detectors, sharing the first ``L-1`` blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from timm.layers.pos_embed_sincos import build_rotary_pos_embed
from torch import nn

from ..utils.activation_checkpointing import checkpointed
from .finetune import value_weight

__all__ = [
    "DENSE_RESIDUALS",
    "TowerOutput",
    "VisionTower",
    "eva_rope_table",
    "resize_pos_embed",
    "vision_tower",
]

#: the residual of the last block's value path: "token" (each token's own input, DenseVLM and
#: CLIPSelf's ``encode_dense``) or "cls" (the CLS token's input broadcast to every token, CAT-Seg's
#: ``forward_dense``)
DENSE_RESIDUALS = ("token", "cls")


def resize_pos_embed(
    pos_embed: torch.Tensor, src_grid: tuple[int, int], dst_grid: tuple[int, int]
) -> torch.Tensor:
    """Resize ``(1 + h*w, C)`` position embeddings (CLS first) as the published code does.

    Bicubic, ``align_corners=False``, no antialias: timm's ``resample_abs_pos_embed`` antialiases by
    default and gives different values, even when upsampling.
    """
    if tuple(src_grid) == tuple(dst_grid):
        return pos_embed
    cls_pe, grid_pe = pos_embed[:1], pos_embed[1:]
    grid_pe = grid_pe.T.reshape(1, -1, *src_grid)
    grid_pe = F.interpolate(grid_pe, size=dst_grid, mode="bicubic", align_corners=False)
    grid_pe = grid_pe.reshape(grid_pe.shape[1], -1).T
    return torch.cat([cls_pe, grid_pe], dim=0)


def eva_rope_table(
    grid: tuple[int, int], head_dim: int, ref_len: float = 16.0, theta: float = 10000.0
) -> torch.Tensor:
    """EVA02's 2-D rotary table for a ``grid = (H, W)`` token grid, in timm's ``[sin | cos]``
    layout, built by timm's ``build_rotary_pos_embed`` with EVA's scheme for other grids.

    Per axis of length ``n`` the positions are ``arange(n) / n * ref_len`` (EVA's ``pt_seq_len``);
    frequencies are ``theta ** -(2i / d)`` for ``d = head_dim / 2`` and each is repeated twice
    (interleaved rotation). The first half of each head's channels rotates with the row, the second
    half with the column. Returns ``(H * W, 2 * head_dim)``, float32. (timm's module itself,
    ``RotaryEmbeddingCat.get_embed(shape)``, ignores ``shape`` when it holds a cached table.)
    """
    sin, cos = build_rotary_pos_embed(
        list(grid),
        dim=head_dim,
        temperature=theta,
        in_pixels=False,
        ref_feat_shape=[ref_len, ref_len],
    )
    return torch.cat([sin, cos], dim=-1)


@dataclass
class TowerOutput:
    """What one pass of :meth:`VisionTower.forward` computed.

    ``dense``: (B, D, H, W) projected tokens (value path in the last block), L2-normalised unless
    asked otherwise.
    ``image``: (B, D) projected CLS embedding (not normalised), when asked for. ``blocks``: block
    index -> (B, C, H, W) token map after that block; for the last block, its value path.
    """

    grid: tuple[int, int]
    dense: torch.Tensor | None = None
    image: torch.Tensor | None = None
    blocks: dict[int, torch.Tensor] = field(default_factory=dict)


class VisionTower:
    """Architecture-independent driver; subclasses say how to embed, run a block, run the value
    path, project."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.grad_checkpointing = False

    # -- to implement ------------------------------------------------------------------------------
    patch_size: int
    pretrained_grid: tuple[int, int]
    width: int
    output_dim: int
    num_blocks: int

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int], object]:
        """Image -> (tokens with CLS first, token grid, per-pass context such as a RoPE table)."""
        raise NotImplementedError

    def block(self, index: int, x: torch.Tensor, ctx: object) -> torch.Tensor:
        raise NotImplementedError

    def value_block(
        self, index: int, x: torch.Tensor, ctx: object, residual: str = "token"
    ) -> torch.Tensor:
        """Block ``index`` with attention replaced by its value path (MaskCLIP-style identity
        attention); ``residual``: see :data:`DENSE_RESIDUALS`."""
        raise NotImplementedError

    def project_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm and projection of patch tokens (B, N, C) -> (B, N, D)."""
        raise NotImplementedError

    def project_cls(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled CLS embedding of the full token sequence (B, 1+N, C) -> (B, D)."""
        raise NotImplementedError

    @property
    def blocks(self) -> nn.ModuleList:
        """The vision blocks, in order."""
        raise NotImplementedError

    def dense_unused_parameters(self) -> list[nn.Parameter]:
        """Parameters the dense path never touches (the last block's query and key projections,
        where they are separate tensors): they get no gradient from dense-feature losses."""
        return []

    # -- shared ------------------------------------------------------------------------------------
    def token_grid(self, height: int, width: int) -> tuple[int, int]:
        return height // self.patch_size, width // self.patch_size

    def _run_block(self, fn, index: int, x: torch.Tensor, ctx: object, *args) -> torch.Tensor:
        """With ``grad_checkpointing``: checkpointed where autograd records something (the block
        trains, or its input has a gradient), also the first trainable block after frozen ones."""
        enabled = self.grad_checkpointing and (
            x.requires_grad or any(p.requires_grad for p in self.blocks[index].parameters())
        )
        return checkpointed(fn, index, x, ctx, *args, enabled=enabled)

    def forward(
        self,
        x: torch.Tensor,
        *,
        dense: bool = True,
        image: bool = False,
        block_indices: tuple[int, ...] | list[int] = (),
        dense_residual: str = "token",
        normalize: bool = True,
    ) -> TowerOutput:
        """One pass computing only what is asked for, skipping blocks after the last one needed.
        ``dense_residual``: see :data:`DENSE_RESIDUALS`; ``normalize``: L2-normalise the dense
        tokens."""
        if dense_residual not in DENSE_RESIDUALS:
            raise ValueError(
                f"dense_residual must be one of {DENSE_RESIDUALS}, got {dense_residual!r}"
            )
        last = self.num_blocks - 1
        for i in block_indices:
            if not 0 <= i <= last:
                raise ValueError(
                    f"block index {i} out of range for a tower with {self.num_blocks} blocks"
                )
        tokens, grid, ctx = self.embed(x)
        out = TowerOutput(grid=grid)
        wanted = set(block_indices)
        stop = last if (dense or image or last in wanted) else max(wanted, default=-1) + 1
        for i in range(min(stop, last)):
            tokens = self._run_block(self.block, i, tokens, ctx)
            if i in wanted:
                out.blocks[i] = self._to_map(tokens[:, 1:], grid)
        if dense or last in wanted:
            value = self._run_block(self.value_block, last, tokens, ctx, dense_residual)
            if last in wanted:
                out.blocks[last] = self._to_map(value[:, 1:], grid)
            if dense:
                projected = self.project_tokens(value[:, 1:])
                out.dense = self._to_map(
                    F.normalize(projected, dim=-1) if normalize else projected, grid
                )
        if image:
            out.image = self.project_cls(self._run_block(self.block, last, tokens, ctx))
        return out

    @staticmethod
    def _to_map(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b, _, c = tokens.shape
        return tokens.transpose(1, 2).reshape(b, c, *grid)


class EvaTower(VisionTower):
    """timm ``Eva`` trunk as used by open_clip's EVA02 models (``model.visual.trunk``)."""

    def __init__(self, trunk: nn.Module):
        super().__init__(trunk)
        if (
            trunk.cls_token is None
            or trunk.pos_embed is None
            or trunk.no_embed_class
            or trunk.reg_token is not None
        ):
            raise ValueError(
                "EvaTower expects an EVA02-CLIP trunk: CLS token, position embedding covering it"
            )
        self.patch_size = int(trunk.patch_embed.patch_size[0])
        self.pretrained_grid = tuple(int(g) for g in trunk.patch_embed.grid_size)
        self.width = trunk.embed_dim
        self.output_dim = trunk.head.out_features
        self.num_blocks = len(trunk.blocks)
        attn = trunk.blocks[0].attn
        self.head_dim = attn.head_dim
        rope = trunk.rope
        self.rope_ref_len = (
            float(rope.ref_feat_shape[0]) if rope is not None and rope.ref_feat_shape else None
        )
        self.rope_theta = float(rope.temperature) if rope is not None else None
        self._rope_cache: dict[tuple, torch.Tensor] = {}

    def rope_table(self, grid: tuple[int, int], device: torch.device) -> torch.Tensor | None:
        if self.module.rope is None:
            return None
        key = (grid, device)
        if key not in self._rope_cache:
            self._rope_cache[key] = eva_rope_table(
                grid, self.head_dim, self.rope_ref_len, self.rope_theta
            ).to(device)
        return self._rope_cache[key]

    def embed(self, x):
        trunk = self.module
        x = trunk.patch_embed.proj(x)
        grid = (x.shape[-2], x.shape[-1])
        x = trunk.patch_embed.norm(x.flatten(2).transpose(1, 2))
        x = torch.cat([trunk.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        x = x + resize_pos_embed(trunk.pos_embed[0], self.pretrained_grid, grid).to(x.dtype)
        x = trunk.norm_pre(trunk.pos_drop(x))
        return x, grid, self.rope_table(grid, x.device)

    @property
    def blocks(self):
        return self.module.blocks

    def block(self, index, x, ctx):
        return self.module.blocks[index](x, rope=ctx)

    def value_block(self, index, x, ctx, residual="token"):
        blk = self.module.blocks[index]
        attn = blk.attn
        if attn.v_proj is None:  # fused qkv layout: slice the value rows
            c = attn.num_heads * attn.head_dim
            bias = attn.v_bias
            v = F.linear(blk.norm1(x), attn.qkv.weight[2 * c :], bias)
        else:
            v = attn.v_proj(blk.norm1(x))
        v = attn.proj_drop(attn.proj(attn.norm(v)))
        if blk.gamma_1 is not None:
            v = blk.gamma_1 * v
        x = _residual(x, residual) + blk.drop_path1(v)
        m = blk.mlp(blk.norm2(x))
        if blk.gamma_2 is not None:
            m = blk.gamma_2 * m
        return x + blk.drop_path2(m)

    def project_tokens(self, x):
        trunk = self.module
        return trunk.head(trunk.head_drop(trunk.norm(x)))

    def dense_unused_parameters(self):
        attn = self.module.blocks[-1].attn
        if attn.q_proj is None:  # fused qkv: the query/key rows get zero gradients, not none
            return []
        return [*attn.q_proj.parameters(), *attn.k_proj.parameters()]

    def project_cls(self, x):
        trunk = self.module
        x = trunk.norm(x)
        return trunk.head(trunk.head_drop(trunk.fc_norm(x[:, 0])))


class OpenAIViTTower(VisionTower):
    """open_clip's ``VisionTransformer`` (OpenAI CLIP layout, ``model.visual``)."""

    def __init__(self, visual: nn.Module):
        super().__init__(visual)
        if visual.attn_pool is not None or getattr(visual, "pool_type", "tok") != "tok":
            raise ValueError("OpenAIViTTower supports CLS-token ViTs without attentional pooling")
        self.patch_size = int(visual.patch_size[0])
        self.pretrained_grid = tuple(int(g) for g in visual.grid_size)
        self.width = visual.conv1.out_channels
        self.output_dim = visual.proj.shape[1]
        self.num_blocks = len(visual.transformer.resblocks)
        self.batch_first = getattr(visual.transformer, "batch_first", True)

    def embed(self, x):
        vis = self.module
        x = vis.conv1(x)
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([vis.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1), x], dim=1)
        x = x + resize_pos_embed(vis.positional_embedding, self.pretrained_grid, grid).to(x.dtype)
        x = vis.ln_pre(vis.patch_dropout(x))
        return x, grid, None

    @property
    def blocks(self):
        return self.module.transformer.resblocks

    def block(self, index, x, ctx):
        blk = self.module.transformer.resblocks[index]
        if self.batch_first:
            return blk(x)
        return blk(x.transpose(0, 1)).transpose(0, 1)

    def value_block(self, index, x, ctx, residual="token"):
        blk = self.module.transformer.resblocks[index]
        attn = blk.attn
        c = attn.embed_dim
        v = F.linear(blk.ln_1(x), value_weight(attn), attn.in_proj_bias[2 * c :])
        x = _residual(x, residual) + blk.ls_1(attn.out_proj(v))
        return x + blk.ls_2(blk.mlp(blk.ln_2(x)))

    def project_tokens(self, x):
        vis = self.module
        return vis.ln_post(x) @ vis.proj

    def dense_unused_parameters(self):
        attn = self.module.transformer.resblocks[-1].attn
        if attn.in_proj_weight is not None:  # fused: the query/key rows get zero gradients
            return []
        return [attn.q_proj_weight, attn.k_proj_weight]

    def project_cls(self, x):
        vis = self.module
        return vis.ln_post(x[:, 0]) @ vis.proj


def _residual(x: torch.Tensor, kind: str) -> torch.Tensor:
    """The value path's residual: every token's own input, or the CLS token's for all."""
    return x if kind == "token" else x[:, :1].expand_as(x)


def vision_tower(visual: nn.Module) -> VisionTower:
    """The :class:`VisionTower` for an open_clip model's ``visual`` module."""
    from open_clip.timm_model import TimmModel
    from open_clip.transformer import VisionTransformer
    from timm.models.eva import Eva

    if isinstance(visual, TimmModel) and isinstance(visual.trunk, Eva):
        if len(visual.head) > 0:
            raise ValueError(
                "EVA02 towers with an extra open_clip projection head are not supported"
            )
        return EvaTower(visual.trunk)
    if isinstance(visual, VisionTransformer):
        return OpenAIViTTower(visual)
    raise TypeError(f"no dense-feature support for vision towers of type {type(visual).__name__}")
