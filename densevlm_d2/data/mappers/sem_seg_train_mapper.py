"""Training inputs for semantic segmentation (CAT-Seg / MaskFormer's ``mask_former_semantic``).

The image and its label file are read and augmented together: resize the shortest edge
(``INPUT.MIN_SIZE_TRAIN`` with ``INPUT.MIN_SIZE_TRAIN_SAMPLING``, at most ``INPUT.MAX_SIZE_TRAIN``),
an optional random crop of ``INPUT.CROP.SIZE`` in which no class covers more than
``INPUT.CROP.SINGLE_CATEGORY_MAX_AREA`` of the pixels (the ignore label excepted; up to 10 tries,
detectron2's ``RandomCrop_CategoryAreaConstraint``), the optional SSD colour distortion
(``INPUT.COLOR_AUG_SSD``, :class:`~densevlm_d2.data.transforms.ColorAugSSD`; the image only), and a
horizontal flip with probability 0.5. With ``INPUT.SIZE_DIVISIBILITY`` > 0 both are then padded on
the bottom and right to a multiple of it: the image with 128, the label with the ignore label.

The label is read with PIL, so 16-bit PNG/TIF labels (more than 255 classes) keep their values, and
checked before anything else (one value per pixel, the image's size, only class indices of the
dataset's vocabulary and its ignore label: an error names the file and the dataset,
:func:`~densevlm_d2.data.datasets.sem_seg.read_sem_seg_label`); it is augmented as float64, exact
for any integer class index, because detectron2 resizes non-uint8 arrays with torch, which has no
nearest resize for integer tensors (the published mapper does the same). The output is the record
with ``image`` ((3, H, W) uint8, ``INPUT.FORMAT`` channel order, RGB by default) and ``sem_seg``
((H, W) int64); its ``width`` and ``height``, if given, must be the image's (they are set from the
image otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from ..datasets.sem_seg import read_sem_seg_label
from ..transforms import ColorAugSSD
from ..vocabulary import training_vocabulary

__all__ = ["SemSegTrainMapper"]


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
        num_classes: int | None = None,
        dataset_name: str = "",
    ):
        """``num_classes``: the labels' class count (None: not checked); ``dataset_name``: named
        in errors."""
        self.augmentations = T.AugmentationList(list(augmentations))
        self.image_format = image_format
        self.ignore_label = ignore_label
        self.size_divisibility = size_divisibility
        self.num_classes = num_classes
        self.dataset_name = dataset_name

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> dict:
        if not is_train:
            raise ValueError(
                "SemSegTrainMapper is for training; evaluate with SemSegTestMapper (is_train=False)"
            )
        if not cfg.DATASETS.TRAIN:
            raise ValueError("SemSegTrainMapper reads DATASETS.TRAIN: none is given")
        ignore_label = MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("ignore_label", 255)
        vocabulary = training_vocabulary(cfg.DATASETS.TRAIN)
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
            "num_classes": len(vocabulary),
            "dataset_name": ", ".join(cfg.DATASETS.TRAIN),
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
        num_classes = self.num_classes if self.num_classes is not None else 2**31
        label = read_sem_seg_label(
            label_file,
            num_classes,
            self.ignore_label,
            size=image.shape[:2],
            where=f"dataset {self.dataset_name}, image {file_name}"
            if self.dataset_name
            else f"image {file_name}",
        ).astype(np.float64)
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
