"""Detection data for the F-ViT recipes: detectron2's ``DatasetMapper`` with large-scale jitter.

Published F-ViT (MMDetection): resize so that the long side is ``S * r``, ``r ~ U(0.1, 2.0)``,
random ``S x S`` crop (boxes clipped, empty ones dropped), horizontal flip; test: long side ``S``.
These are detectron2's ``ResizeScale`` + ``FixedSizeCrop`` + ``RandomFlip`` and ``ResizeScale(1,
1)``. Images are not padded here: the F-ViT backbone pads the normalised batch
(``MODEL.FVIT.PAD_TO``).
"""

from __future__ import annotations

from detectron2.data import DatasetMapper
from detectron2.data import transforms as T

__all__ = ["build_detection_mapper", "lsj_augmentations"]


def lsj_augmentations(size: int, min_scale: float, max_scale: float, is_train: bool) -> list:
    if not is_train:
        return [T.ResizeScale(1.0, 1.0, size, size)]
    return [
        T.ResizeScale(min_scale, max_scale, size, size),
        T.FixedSizeCrop((size, size), pad=False),
        T.RandomFlip(horizontal=True),
    ]


def build_detection_mapper(cfg, is_train: bool) -> DatasetMapper:
    lsj = cfg.INPUT.LSJ
    return DatasetMapper(
        cfg,
        is_train,
        augmentations=lsj_augmentations(lsj.IMAGE_SIZE, lsj.MIN_SCALE, lsj.MAX_SCALE, is_train),
        recompute_boxes=cfg.MODEL.MASK_ON and is_train,
    )
