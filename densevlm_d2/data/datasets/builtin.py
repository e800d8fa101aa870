"""Register the datasets this project evaluates and trains on, under ``$DETECTRON2_DATASETS``
(default ``datasets/``). Runs on ``import densevlm_d2``; files are only read when a dataset is used.

* ``densevlm_coco_panoptic_val``: ``coco/val2017/``, ``coco/annotations/panoptic_val2017.json``,
  ``coco/annotations/panoptic_val2017/``;
* ``densevlm_coco_panoptic_train``: the same with ``train2017``;
* ``densevlm_ade20k_panoptic_val``: ``ADEChallengeData2016/images/validation/``,
  ``ADEChallengeData2016/ade20k_panoptic_val.json``, ``ADEChallengeData2016/ade20k_panoptic_val/``.
"""

from __future__ import annotations

import os

from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from .ade20k_categories import ADE20K_150
from .panoptic import register_panoptic

__all__ = ["COCO_LAYOUT", "ADE20K_LAYOUT", "register_all"]

COCO_LAYOUT = """\
coco/
  train2017/  val2017/                     images (*.jpg)
  annotations/
    panoptic_train2017.json  panoptic_val2017.json
    panoptic_train2017/  panoptic_val2017/  panoptic PNGs (unzipped from panoptic_*2017.zip)"""

ADE20K_LAYOUT = """\
ADEChallengeData2016/
  images/validation/                      images (*.jpg)
  ade20k_panoptic_val.json                written by datasets/prepare_ade20k_panoptic.py
  ade20k_panoptic_val/                    panoptic PNGs, idem"""


def register_all(root: str | None = None) -> None:
    root = root if root is not None else os.getenv("DETECTRON2_DATASETS", "datasets")
    for split in ("val", "train"):
        coco = os.path.join(root, "coco")
        register_panoptic(
            f"densevlm_coco_panoptic_{split}",
            COCO_CATEGORIES,
            image_root=os.path.join(coco, f"{split}2017"),
            panoptic_root=os.path.join(coco, "annotations", f"panoptic_{split}2017"),
            panoptic_json=os.path.join(coco, "annotations", f"panoptic_{split}2017.json"),
            layout=COCO_LAYOUT,
        )
    ade = os.path.join(root, "ADEChallengeData2016")
    register_panoptic(
        "densevlm_ade20k_panoptic_val",
        ADE20K_150,
        image_root=os.path.join(ade, "images", "validation"),
        panoptic_root=os.path.join(ade, "ade20k_panoptic_val"),
        panoptic_json=os.path.join(ade, "ade20k_panoptic_val.json"),
        layout=ADE20K_LAYOUT,
    )


register_all()
