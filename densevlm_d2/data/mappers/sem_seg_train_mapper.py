"""Training inputs for semantic segmentation (CAT-Seg / MaskFormer's ``mask_former_semantic``).

The image and its label file are read and augmented together: resize the shortest edge
(``INPUT.MIN_SIZE_TRAIN`` with ``INPUT.MIN_SIZE_TRAIN_SAMPLING``, at most ``INPUT.MAX_SIZE_TRAIN``),
an optional random crop of ``INPUT.CROP.SIZE`` in which no class covers more than
``INPUT.CROP.SINGLE_CATEGORY_MAX_AREA`` of the pixels (the ignore label excepted; up to 10 tries,
detectron2's ``RandomCrop_CategoryAreaConstraint``), the optional SSD colour distortion
(``INPUT.COLOR_AUG_SSD``, :class:`~densevlm_d2.data.transforms.ColorAugSSD`; the image only), and a
horizontal flip with probability 0.5. With ``INPUT.SIZE_DIVISIBILITY`` > 0 both are then padded on
the bottom and right to a multiple of it: the image with 128, the label with the ignore label.

The label is read with PIL, so 16-bit PNG/TIF labels (more than 255 classes) keep their values;
it is augmented as float64, exact for any integer class index, because detectron2 resizes non-uint8
arrays with torch, which has no nearest resize for integer tensors (the published mapper does the
same). The output is the record with ``image`` ((3, H, W) uint8, ``INPUT.FORMAT`` channel order,
RGB by default) and ``sem_seg`` ((H, W) int64); its ``width`` and ``height``, if given, must be the
image's (they are set from the image otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from PIL import Image

from ..transforms import ColorAugSSD

__all__ = ["SemSegTrainMapper"]


def _read_label(path: str) -> np.ndarray:
    """(H, W) class indices as float64, from a PIL-readable file (8/16/32-bit, palette)."""
    with Image.open(path) as f:
        label = np.asarray(f, dtype=np.int64)
    if label.ndim != 2:
        raise ValueError(
            f"{path}: a label file must hold one class index per pixel (H, W); "
            f"it decodes to shape {label.shape}"
        )
    return label.astype(np.float64)


class SemSegTrainMapper:
    """``{file_name, sem_seg_file_name, ...}`` -> the record with ``image`` ((3, H, W) uint8) and
    ``sem_seg`` ((H, W) int64), both augmented by ``augmentations`` and padded to
    ``size_divisibility`` (if > 0)."""

    @configurable
    def __init__(
        self,
        *,
        augmentations: Sequence[T.Augmentation | T.Transform],
        image_format: str = "RGB",
        ignore_label: int = 255,
        size_divisibility: int = -1,
    ):
        self.augmentations = T.AugmentationList(list(augmentations))
        self.image_format = image_format
        self.ignore_label = ignore_label
        self.size_divisibility = size_divisibility

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> dict:
        if not is_train:
            raise ValueError(
                "SemSegTrainMapper is for training; evaluate with SemSegTestMapper (is_train=False)"
            )
        ignore_label = MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("ignore_label", 255)
        augs: list[T.Augmentation] = [
            T.ResizeShortestEdge(
                cfg.INPUT.MIN_SIZE_TRAIN,
                cfg.INPUT.MAX_SIZE_TRAIN,
                cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING,
            )
        ]
        if cfg.INPUT.CROP.ENABLED:
            augs.append(
                T.RandomCrop_CategoryAreaConstraint(
                    cfg.INPUT.CROP.TYPE,
                    cfg.INPUT.CROP.SIZE,
                    cfg.INPUT.CROP.get("SINGLE_CATEGORY_MAX_AREA", 1.0),
                    ignore_label,
                )
            )
        if cfg.INPUT.get("COLOR_AUG_SSD", False):
            augs.append(ColorAugSSD(img_format=cfg.INPUT.FORMAT))
        augs.append(T.RandomFlip())
        return {
            "augmentations": augs,
            "image_format": cfg.INPUT.FORMAT,
            "ignore_label": ignore_label,
            "size_divisibility": cfg.INPUT.get("SIZE_DIVISIBILITY", -1),
        }

    def __call__(self, dataset_dict: dict) -> dict:
        file_name = dataset_dict.get("file_name", "<no file_name>")
        label_file = dataset_dict.get("sem_seg_file_name")
        if label_file is None:
            raise ValueError(
                f"record {file_name} (image id {dataset_dict.get('image_id')!r}) has no "
                "sem_seg_file_name: not a semantic-segmentation record"
            )
        image = utils.read_image(file_name, format=self.image_format)
        label = _read_label(label_file)
        if image.shape[:2] != label.shape:
            raise ValueError(
                f"{label_file}: the label is {label.shape[1]}x{label.shape[0]} (WxH), "
                f"its image {file_name} is {image.shape[1]}x{image.shape[0]}"
            )
        out = dict(dataset_dict)
        utils.check_image_size(out, image)  # the record's width/height, if given; else sets them

        aug_input = T.AugInput(image, sem_seg=label)
        self.augmentations(aug_input)
        image, label = aug_input.image, aug_input.sem_seg

        image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        label = torch.from_numpy(np.ascontiguousarray(label)).long()
        if self.size_divisibility > 0:
            height, width = label.shape
            d = self.size_divisibility
            pad = [0, -width % d, 0, -height % d]  # left, right, top, bottom
            image = torch.nn.functional.pad(image, pad, value=128)
            label = torch.nn.functional.pad(label, pad, value=self.ignore_label)

        out["image"] = image.contiguous()
        out["sem_seg"] = label.contiguous()
        return out
