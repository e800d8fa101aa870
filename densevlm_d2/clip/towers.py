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

Towers pooled by timm's attention-pool (MAP) head instead of a CLS token (:class:`SigLIPTower`
for SigLIP / SigLIP 2, :class:`PETower` for PE-Core) run every block as usual and take the value
path in the pooling head instead (:class:`PooledTower`), so that a one-token input's dense
feature is the model's image embedding; their position embeddings (and PE's RoPE table) are
resized as timm resizes them for other input sizes. docs/students.md lists the families.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from timm.layers import AttentionPoolLatent, resample_abs_pos_embed
from timm.layers.pos_embed_sincos import build_rotary_pos_embed
from torch import nn
from torch.utils.checkpoint import checkpoint

from .finetune import value_weight

__all__ = [
    "DENSE_RESIDUALS",
    "EvaTower",
    "OpenAIViTTower",
    "PETower",
    "PooledTower",
    "SigLIPTower",
    "TowerOutput",
    "VisionTower",
    "eva_rope_table",
    "resize_pos_embed",
    "timm_rope_table",
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
    #: tokens before the patch tokens (a CLS token: 1; SigLIP: 0)
    num_prefix_tokens: int = 1
    #: whether the dense path replaces the last block's attention by its value path (CLS-token
    #: towers) or runs that block as usual, the value path being in a pooling head (pooled towers)
    value_path_in_last_block: bool = True

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int], object]:
        """Image -> (tokens with the prefix (CLS) tokens first, token grid, per-pass context such as
        a RoPE table)."""
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
        """The image embedding of the full token sequence (B, prefix + N, C) -> (B, D)."""
        raise NotImplementedError

    def dense_unused_parameters(self) -> list[nn.Parameter]:
        """Parameters the dense path never touches (the last block's query and key projections,
        where they are separate tensors): they get no gradient from dense-feature losses."""
        return []

    # -- shared ------------------------------------------------------------------------------------
    def token_grid(self, height: int, width: int) -> tuple[int, int]:
        return height // self.patch_size, width // self.patch_size

    def _run_block(self, fn, index: int, x: torch.Tensor, ctx: object, *args) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled() and x.requires_grad:
            return checkpoint(fn, index, x, ctx, *args, use_reentrant=False)
        return fn(index, x, ctx, *args)

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
        if dense_residual != "token" and not self.value_path_in_last_block:
            raise ValueError(
                f"dense_residual {dense_residual!r} changes the last block's value path; "
                f"{type(self).__name__} runs that block as usual (its value path is in the "
                "pooling head): use 'token'"
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
        p = self.num_prefix_tokens
        for i in range(min(stop, last)):
            tokens = self._run_block(self.block, i, tokens, ctx)
            if i in wanted:
                out.blocks[i] = self._to_map(tokens[:, p:], grid)
        value = None
        if dense or last in wanted:
            if self.value_path_in_last_block:
                value = self._run_block(self.value_block, last, tokens, ctx, dense_residual)
            else:
                value = self._run_block(self.block, last, tokens, ctx)
            if last in wanted:
                out.blocks[last] = self._to_map(value[:, p:], grid)
            if dense:
                projected = self.project_tokens(value[:, p:])
                out.dense = self._to_map(
                    F.normalize(projected, dim=-1) if normalize else projected, grid
                )
        if image:
            if value is None or self.value_path_in_last_block:
                value = self._run_block(self.block, last, tokens, ctx)
            out.image = self.project_cls(value)
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
        pos_embed = self.module.pos_embed[0]
        x, grid = _timm_embed(
            self.module, x, lambda g: resize_pos_embed(pos_embed, self.pretrained_grid, g)
        )
        return x, grid, self.rope_table(grid, x.device)

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


class PooledTower(VisionTower):
    """A timm trunk whose image embedding is pooled by timm's attention-pool (MAP) head: a learned
    latent query attends over all tokens, then the pool's output projection, a residual MLP
    ``x + mlp(norm(x))``, timm's ``fc_norm`` and ``head``, and open_clip's own projection
    (``visual.head``) if any. Subclasses say how to embed and run a block.

    Dense feature of a token: the image embedding the model would give if the pool attended to
    that token alone (softmax over one key is 1). The token's value through the pool's value and
    output projections, then the pool's residual MLP, ``fc_norm``, ``head`` and open_clip's
    projection, exactly as they act on the pooled latent. So for a one-token input the dense
    feature *is* the image embedding. The trunk's last block runs as usual: the pool is the
    attention that makes the image embedding, so it is where the value path belongs (MaskCLIP
    does the same for ResNet CLIPs, whose attention pool it replaces by its value path).
    """

    value_path_in_last_block = False

    def __init__(self, visual: nn.Module):
        trunk = visual.trunk
        super().__init__(trunk)
        pool = getattr(trunk, "attn_pool", None)
        if not isinstance(pool, AttentionPoolLatent):
            name = type(self).__name__
            raise ValueError(f"{name} needs a trunk with timm's attention pool (map)")
        if pool.latent_len != 1 or pool.pos_embed is not None or pool.pool != "token":
            raise ValueError(
                "the attention pool must have one latent query and no position embedding of its own"
            )
        if getattr(trunk, "reg_token", None) is not None:
            raise ValueError(f"{type(self).__name__} does not support register tokens")
        self.pool = pool
        self.projection = visual.head  # open_clip's projection after the trunk (often empty)
        self.num_prefix_tokens = 0 if trunk.cls_token is None else 1
        self.patch_size = int(trunk.patch_embed.patch_size[0])
        self.pretrained_grid = tuple(int(g) for g in trunk.patch_embed.grid_size)
        self.width = trunk.embed_dim
        self.num_blocks = len(trunk.blocks)
        weight = pool.kv.weight
        with torch.no_grad():  # the output size, whatever the head's layers are
            probe = torch.zeros(1, pool.out_features, device=weight.device, dtype=weight.dtype)
            self.output_dim = int(self._head(probe).shape[-1])

    def _pos_embed(self, grid: tuple[int, int]) -> torch.Tensor:
        """The position embedding for ``grid`` as timm resizes it for other input sizes
        (``dynamic_img_size``): bicubic, antialiased, prefix tokens kept."""
        trunk = self.module
        prefix = 0 if getattr(trunk, "no_embed_class", False) else self.num_prefix_tokens
        return resample_abs_pos_embed(
            trunk.pos_embed, list(grid), list(self.pretrained_grid), num_prefix_tokens=prefix
        )[0]

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        trunk = self.module
        return self.projection(trunk.head(trunk.head_drop(trunk.fc_norm(x))))

    def project_tokens(self, x):
        pool = self.pool
        c = pool.kv.out_features // 2  # kv rows: keys, then values
        bias = None if pool.kv.bias is None else pool.kv.bias[c:]
        v = pool.proj_drop(pool.proj(F.linear(self.module.norm(x), pool.kv.weight[c:], bias)))
        if pool.mlp is not None:
            v = v + pool.mlp(pool.norm(v))
        return self._head(v)

    def project_cls(self, x):
        return self._head(self.pool(self.module.norm(x)))

    def dense_unused_parameters(self):
        # the latent query and its projection only weigh tokens; the keys share the fused kv
        # tensor with the values (zero gradients, not none)
        return [self.pool.latent, *self.pool.q.parameters()]


class SigLIPTower(PooledTower):
    """timm ``VisionTransformer`` with an attention-pool head and no class token (SigLIP and
    SigLIP 2 in open_clip, ``model.visual``): position embeddings of the full grid resized as timm
    does."""

    def __init__(self, visual: nn.Module):
        super().__init__(visual)
        if self.module.pos_embed is None:
            raise ValueError("SigLIPTower expects a trunk with absolute position embeddings")

    def embed(self, x):
        x, grid = _timm_embed(self.module, x, self._pos_embed)
        return x, grid, None

    def block(self, index, x, ctx):
        return self.module.blocks[index](x)


class PETower(PooledTower):
    """timm ``Eva`` with an attention-pool head (Perception Encoder, PE-Core, in open_clip,
    ``model.visual``): CLS token and absolute position embedding resized as timm does, and a RoPE
    table built for the actual grid with the trunk's own rotary settings (for PE: positions
    offset by one, ``xy`` order, rescaled to the pretraining grid), as timm builds it for other
    input sizes."""

    def __init__(self, visual: nn.Module):
        super().__init__(visual)
        trunk = self.module
        if trunk.pos_embed is None or trunk.rope is None or trunk.no_embed_class:
            raise ValueError(
                "PETower expects a PE trunk: position embedding covering the CLS token, RoPE"
            )
        self._rope_cache: dict[tuple, torch.Tensor] = {}

    def rope_table(self, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
        key = (grid, device)
        if key not in self._rope_cache:
            self._rope_cache[key] = timm_rope_table(self.module.rope, grid).to(device)
        return self._rope_cache[key]

    def embed(self, x):
        x, grid = _timm_embed(self.module, x, self._pos_embed)
        return x, grid, self.rope_table(grid, x.device)

    def block(self, index, x, ctx):
        return self.module.blocks[index](x, rope=ctx)


def timm_rope_table(rope: nn.Module, grid: tuple[int, int]) -> torch.Tensor:
    """The ``[sin | cos]`` table of a timm ``RotaryEmbeddingCat`` for a ``grid = (H, W)``, built
    from the module's own settings as the module builds it when it holds no cached table
    (``get_embed(shape)`` of a model made with ``dynamic_img_size``)."""
    sin, cos = build_rotary_pos_embed(
        list(grid),
        bands=rope.bands,
        in_pixels=rope.in_pixels,
        ref_feat_shape=rope.ref_feat_shape,
        grid_offset=rope.grid_offset,
        grid_indexing=rope.grid_indexing,
        rotate_half=rope.rotate_half,
        grid_type=rope.grid_type,
        normalize_coords=rope.normalize_coords,
    )
    return torch.cat([sin, cos], dim=-1)


def _timm_embed(trunk: nn.Module, x: torch.Tensor, pos_embed) -> tuple[torch.Tensor, tuple]:
    """A timm trunk's patch embedding, CLS token (if any), position embedding ``pos_embed(grid)``
    (``(prefix + H*W, C)``) and pre-norm, for any input size."""
    x = trunk.patch_embed.proj(x)
    grid = (x.shape[-2], x.shape[-1])
    x = trunk.patch_embed.norm(x.flatten(2).transpose(1, 2))
    if trunk.cls_token is not None:
        x = torch.cat([trunk.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
    x = x + pos_embed(grid).to(x.dtype)
    return trunk.norm_pre(trunk.pos_drop(x)), grid


def _residual(x: torch.Tensor, kind: str) -> torch.Tensor:
    """The value path's residual: every token's own input, or the CLS token's for all."""
    return x if kind == "token" else x[:, :1].expand_as(x)


def vision_tower(visual: nn.Module) -> VisionTower:
    """The :class:`VisionTower` for an open_clip model's ``visual`` module."""
    from open_clip.timm_model import TimmModel
    from open_clip.transformer import VisionTransformer
    from timm.models.eva import Eva
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    if isinstance(visual, TimmModel) and getattr(visual.trunk, "attn_pool", None) is not None:
        if isinstance(visual.trunk, Eva):
            return PETower(visual)
        if isinstance(visual.trunk, TimmViT):
            return SigLIPTower(visual)
    if isinstance(visual, TimmModel) and isinstance(visual.trunk, Eva):
        if len(visual.head) > 0:
            raise ValueError(
                "EVA02 towers with an extra open_clip projection head are not supported"
            )
        return EvaTower(visual.trunk)
    if isinstance(visual, VisionTransformer):
        return OpenAIViTTower(visual)
    raise TypeError(f"no dense-feature support for vision towers of type {type(visual).__name__}")
