"""Detection data for the F-ViT recipes: detectron2's ``DatasetMapper`` with large-scale jitter.

Published F-ViT (MMDetection): resize so that the long side is ``S * r``, ``r ~ U(0.1, 2.0)``,
random ``S x S`` crop (boxes clipped, empty ones dropped), horizontal flip; test: long side ``S``.
These are detectron2's ``ResizeScale`` + ``FixedSizeCrop`` + ``RandomFlip`` and ``ResizeScale(1,
1)``. Images are not padded here: the F-ViT backbone pads the normalised batch
(``MODEL.FVIT.PAD_TO``).

Instance masks (``MODEL.MASK_ON``) are read in ``INPUT.MASK_FORMAT`` (``"polygon"``, as LVIS and
COCO store them); an image whose annotations hold an RLE mask (a dict) is read as bitmasks instead,
since polygons cannot hold one (detectron2's mask loss crops either kind, image by image).
"""

from __future__ import annotations

from detectron2.data import DatasetMapper
from detectron2.data import transforms as T

__all__ = ["DetectionMapper", "build_detection_mapper", "lsj_augmentations"]


def lsj_augmentations(size: int, min_scale: float, max_scale: float, is_train: bool) -> list:
    if not is_train:
        return [T.ResizeScale(1.0, 1.0, size, size)]
    return [
        T.ResizeScale(min_scale, max_scale, size, size),
        T.FixedSizeCrop((size, size), pad=False),
        T.RandomFlip(horizontal=True),
    ]


class DetectionMapper(DatasetMapper):
    """detectron2's ``DatasetMapper``; an image with RLE masks gets bitmasks (module docstring)."""

    def _transform_annotations(self, dataset_dict, transforms, image_shape):
        fmt = self.instance_mask_format
        has_rle = any(
            isinstance(a.get("segmentation"), dict) for a in dataset_dict.get("annotations", ())
        )
        if not (self.use_instance_mask and has_rle and fmt == "polygon"):
            return super()._transform_annotations(dataset_dict, transforms, image_shape)
        self.instance_mask_format = "bitmask"
        try:
            return super()._transform_annotations(dataset_dict, transforms, image_shape)
        finally:
            self.instance_mask_format = fmt


def build_detection_mapper(cfg, is_train: bool) -> DatasetMapper:
    lsj = cfg.INPUT.LSJ
    return DetectionMapper(
        cfg,
        is_train,
        augmentations=lsj_augmentations(lsj.IMAGE_SIZE, lsj.MIN_SCALE, lsj.MAX_SCALE, is_train),
        recompute_boxes=cfg.MODEL.MASK_ON and is_train,
    )
