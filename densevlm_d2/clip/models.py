"""Build the supported CLIP models with upstream open_clip (and timm for the EVA02 vision towers).

Names accepted by :func:`build_clip_model` (case-sensitive):

* ``EVA02-CLIP-B-16`` (open_clip ``EVA02-B-16``): EVA02-CLIP-B/16, the DenseVLM/CLIPSelf student;
* ``EVA02-CLIP-L-14`` (``EVA02-L-14``): EVA02-CLIP-L/14 at 224 px;
* ``EVA02-CLIP-L-14-336`` (``EVA02-L-14-336``): EVA02-CLIP-L/14-336, the DenseVLM teacher;
* ``ViT-B-16``, ``ViT-L-14``, ``ViT-L-14-336``: OpenAI-style ViTs with GELU (open_clip's own
  weights);
* ``ViT-B-16-quickgelu``, ``ViT-L-14-quickgelu``, ``ViT-L-14-336-quickgelu``: the same with
  QuickGELU, which OpenAI's released weights need;
* ``ViT-B-16-SigLIP2``: SigLIP 2 B/16 (timm ``VisionTransformer``, attention-pool head, no CLS);
* ``PE-Core-B-16``: Perception Encoder core B/16 (timm ``Eva`` with RoPE, attention-pool head);
* ``EVA02-Tiny-16``, ``ViT-Tiny-16``, ``ViT-Tiny-16-MAP``, ``PE-Core-Tiny-16`` (configs shipped
  here): tiny versions of those layouts (the same timm classes), for tests and smoke runs.

docs/students.md says how each family's dense features are defined.

open_clip's own names (``EVA02-B-16`` ...) are accepted too, and so is any model registered with
:func:`register_model_config` (the CPU demo registers its ``EVA02-Demo-16`` so). Models are always
built at their pretrained input size so that parameter shapes equal the published checkpoints';
other input sizes are handled at run time by :mod:`densevlm_d2.clip.towers` (position embeddings and
RoPE tables for the actual token grid).
"""

from __future__ import annotations

import logging
import re
from functools import partial
from pathlib import Path

import open_clip
import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.eva import Eva, checkpoint_filter_fn
from timm.models.vision_transformer import VisionTransformer
from torch import nn

__all__ = [
    "MODEL_ALIASES",
    "register_model_config",
    "small_eva02",
    "available_models",
    "build_clip_model",
    "embed_dim_of",
    "open_clip_name",
    "patch_size_of",
]

# EVA-CLIP release names -> open_clip config names. Both spellings are accepted everywhere.
MODEL_ALIASES = {
    "EVA02-CLIP-B-16": "EVA02-B-16",
    "EVA02-CLIP-L-14": "EVA02-L-14",
    "EVA02-CLIP-L-14-336": "EVA02-L-14-336",
}
# Model configs that ship with this package (tiny models of the real layouts, for tests and the
# demo).
_CONFIG_DIR = Path(__file__).parent / "model_configs"
_SUPPORTED = (
    "EVA02-B-16",
    "EVA02-L-14",
    "EVA02-L-14-336",
    "ViT-B-16",
    "ViT-B-16-quickgelu",
    "ViT-L-14",
    "ViT-L-14-quickgelu",
    "ViT-L-14-336",
    "ViT-L-14-336-quickgelu",
    "ViT-B-16-SigLIP2",
    "PE-Core-B-16",
    "EVA02-Tiny-16",
    "ViT-Tiny-16",
    "ViT-Tiny-16-MAP",
    "PE-Core-Tiny-16",
)
# configs registered at run time (register_model_config)
_REGISTERED: set[str] = set()

open_clip.add_model_config(_CONFIG_DIR)

# timm looks up a module-level ``default_cfgs`` when registering models; these have no weights.
default_cfgs = generate_default_cfgs(
    {
        "densevlm_eva02_tiny_patch16_clip_224": {"num_classes": 64},
        "densevlm_vit_tiny_patch16_map_224": {"num_classes": 0},
        "densevlm_pe_tiny_patch16_224": {"num_classes": 64},
    }
)


def small_eva02(
    variant: str,
    pretrained: bool,
    img_size: int,
    embed_dim: int,
    depth: int,
    num_heads: int,
    **kwargs,
) -> Eva:
    """EVA02-CLIP-B/16's architecture (q/k/v projections, SwiGLU with sub-LN, RoPE) at a small
    width and depth; no pretrained weights."""
    if pretrained:
        raise ValueError(f"{variant} has no pretrained weights")
    model_args = dict(
        img_size=img_size,
        patch_size=16,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        qkv_fused=False,
        mlp_ratio=4 * 2 / 3,
        swiglu_mlp=True,
        scale_mlp=True,
        scale_attn_inner=True,
        use_rot_pos_emb=True,
        ref_feat_shape=(16, 16),
        global_pool=kwargs.pop("global_pool", "token"),
        # a full-scale projection at initialisation: these models are trained from scratch (the
        # default 0.001 suits fine-tuning a pretrained trunk and stalls contrastive training)
        head_init_scale=1.0,
    )
    return build_model_with_cfg(
        Eva,
        variant,
        pretrained=False,
        pretrained_filter_fn=checkpoint_filter_fn,
        **dict(model_args, **kwargs),
    )


@register_model
def densevlm_eva02_tiny_patch16_clip_224(pretrained: bool = False, **kwargs) -> Eva:
    """Width 128, 2 blocks: for tests."""
    return small_eva02("densevlm_eva02_tiny_patch16_clip_224", pretrained, 224, 128, 2, 2, **kwargs)


@register_model
def densevlm_vit_tiny_patch16_map_224(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """SigLIP's vision layout (timm ``VisionTransformer``, attention-pool head, no class token) at
    width 64 with 2 blocks; no pretrained weights: for tests and the demo."""
    if pretrained:
        raise ValueError("densevlm_vit_tiny_patch16_map_224 has no pretrained weights")
    model_args = dict(
        patch_size=16, embed_dim=64, depth=2, num_heads=2, class_token=False, global_pool="map"
    )
    return build_model_with_cfg(
        VisionTransformer,
        "densevlm_vit_tiny_patch16_map_224",
        pretrained=False,
        **dict(model_args, **kwargs),
    )


@register_model
def densevlm_pe_tiny_patch16_224(pretrained: bool = False, **kwargs) -> Eva:
    """PE-Core's vision layout (timm ``Eva``: CLS token, RoPE offset by one in ``xy`` order,
    pre-norm, attention-pool head) at width 64 with 2 blocks; no pretrained weights: for tests."""
    if pretrained:
        raise ValueError("densevlm_pe_tiny_patch16_224 has no pretrained weights")
    model_args = dict(
        patch_size=16,
        embed_dim=64,
        depth=2,
        num_heads=2,
        global_pool="map",
        attn_type="rope",
        use_pre_transformer_norm=True,
        use_rot_pos_emb=True,
        ref_feat_shape=(14, 14),
        rope_grid_offset=1.0,
        rope_grid_indexing="xy",
        attn_pool_num_heads=2,
        attn_pool_mlp_ratio=4.0,
        norm_layer=partial(nn.LayerNorm, eps=1e-5),
    )
    return build_model_with_cfg(
        Eva, "densevlm_pe_tiny_patch16_224", pretrained=False, **dict(model_args, **kwargs)
    )


def register_model_config(path: str | Path) -> list[str]:
    """Make the open_clip model config(s) at ``path`` (a ``<name>.json`` or a folder of them)
    buildable by :func:`build_clip_model` under their file names; returns the names."""
    path = Path(path)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise FileNotFoundError(f"no open_clip model config (*.json) at {path}")
    open_clip.add_model_config(path)
    names = [f.stem for f in files]
    _REGISTERED.update(names)
    return names


def open_clip_name(name: str) -> str:
    """The open_clip config name of a supported model; a clear error for anything else."""
    resolved = MODEL_ALIASES.get(name, name)
    if resolved not in _SUPPORTED and resolved not in _REGISTERED:
        raise ValueError(
            f"unsupported CLIP model {name!r}; supported: {', '.join(available_models())}"
        )
    return resolved


def patch_size_of(name: str) -> int:
    """The patch size of a supported model, read from its open_clip config (no model is built)."""
    vision = open_clip.get_model_config(open_clip_name(name))["vision_cfg"]
    if "patch_size" in vision:
        return int(vision["patch_size"])
    match = re.search(r"patch(\d+)", vision["timm_model_name"])
    if not match:
        raise ValueError(f"cannot tell the patch size of {name} ({vision['timm_model_name']})")
    return int(match.group(1))


def embed_dim_of(name: str) -> int:
    """The embedding size of a supported model, read from its open_clip config (no model is
    built)."""
    return int(open_clip.get_model_config(open_clip_name(name))["embed_dim"])


def available_models() -> list[str]:
    return sorted(set(MODEL_ALIASES) | set(_SUPPORTED) | _REGISTERED)


def build_clip_model(name: str, device: torch.device | str = "cpu") -> torch.nn.Module:
    """A randomly initialised open_clip model of a supported architecture, in eval mode.

    Weights are loaded separately and strictly with
    :func:`densevlm_d2.clip.checkpoint.load_checkpoint`.
    """
    root = logging.getLogger()
    root.addFilter(
        _drop_random_init_notice
    )  # weights are loaded afterwards: the notice would mislead
    try:
        model = open_clip.create_model(
            open_clip_name(name), pretrained=None, pretrained_text=False, device=device
        )
    finally:
        root.removeFilter(_drop_random_init_notice)
    return model.eval()


def _drop_random_init_notice(record: logging.LogRecord) -> bool:
    return "initialized randomly" not in record.getMessage()
