"""Config keys of densevlm_d2; every key has its default and a one-line comment."""

from detectron2.config import CfgNode as CN

__all__ = ["add_densevlm_config"]


def add_densevlm_config(cfg: CN) -> CN:
    """Add densevlm_d2's keys to a detectron2 config (idempotent). Returns ``cfg``."""
    if "CLIP" in cfg.MODEL:
        return cfg
    cfg.MODEL.CLIP = CN()
    # A name from densevlm_d2.clip.available_models(): EVA02-CLIP-B-16, EVA02-CLIP-L-14-336,
    # ViT-B-16, ...
    cfg.MODEL.CLIP.MODEL_NAME = "EVA02-CLIP-B-16"
    # CLIP weights in the EVA-CLIP, DenseVLM/CLIPSelf or open_clip layout, loaded strictly; "" =
    # random init.
    cfg.MODEL.CLIP.CHECKPOINT = ""
    # Preprocessing canvas: longest image side resized to this, zero padded to a square (published:
    # 512).
    cfg.MODEL.CLIP.IMAGE_SIZE = 512
    # Freeze the whole CLIP model (vision and text towers).
    cfg.MODEL.CLIP.FROZEN = True
    # When not frozen: how many of the last vision blocks train; embeddings, final norm, projection
    # and the text tower stay frozen (published DenseVLM: all 12 blocks of B/16).
    cfg.MODEL.CLIP.TRAINABLE_BLOCKS = 12
    # Backbone outputs: "dense" (projected, L2-normalised token map, last block through its value
    # path) and/or "block<i>" (0-based vision block outputs, width channels; the last block through
    # its value path), e.g. F-ViT's block3, block5, block7, block11 for B/16.
    cfg.MODEL.CLIP.OUT_FEATURES = ["dense"]
    # Recompute block activations in the backward pass to save memory when training.
    cfg.MODEL.CLIP.GRAD_CHECKPOINTING = False
    # Directory of the text-embedding cache ("default": $DENSEVLM_CACHE or ~/.cache/densevlm_d2; ""
    # disables).
    cfg.MODEL.CLIP.TEXT_CACHE_DIR = "default"
    return cfg
