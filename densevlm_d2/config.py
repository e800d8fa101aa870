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

    # Region-classification evaluation (reference.md section 5).
    cfg.TEST.REGIONS = CN()
    # Region features to score: "rois" (boxes), "maskpool" (masks), "crops" (slow: one CLS pass
    # each).
    cfg.TEST.REGIONS.TYPES = ["rois", "maskpool"]
    # Images per forward pass (the published evaluation runs one at a time).
    cfg.TEST.REGIONS.IMS_PER_BATCH = 4
    # Only the first this-many segments of an image are considered (filtered ones count), as
    # published.
    cfg.TEST.REGIONS.MAX_PER_IMAGE = 100
    # Regions whose box area (original pixels) is below MIN_SIZE**2 or above MAX_SIZE**2 are
    # skipped.
    cfg.TEST.REGIONS.MIN_SIZE = 8
    cfg.TEST.REGIONS.MAX_SIZE = 1024
    # Crops of things are the box enlarged by this factor about its centre; stuff crops are tight.
    cfg.TEST.REGIONS.THING_CROP_SCALE = 1.5
    # Crops are fitted into CROP_SIZE x CROP_SIZE (the CLIP models' pretraining size).
    cfg.TEST.REGIONS.CROP_SIZE = 224
    # Class embeddings as a published-layout .npy (rows in the dataset's class order); "" = build
    # them with the text classifier from the registered class names.
    cfg.TEST.REGIONS.TEXT_EMBEDDINGS = ""
    return cfg
