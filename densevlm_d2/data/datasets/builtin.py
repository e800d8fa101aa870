"""Register the datasets this project evaluates and trains on, under ``$DETECTRON2_DATASETS``
(default ``datasets/``). Runs on ``import densevlm_d2``; files are only read when a dataset is used.
(The CPU demo registers its own datasets: ``demo/register.py``.)

* ``densevlm_coco_panoptic_val``: ``coco/val2017/``, ``coco/annotations/panoptic_val2017.json``,
  ``coco/annotations/panoptic_val2017/``;
* ``densevlm_coco_panoptic_train``: the same with ``train2017``;
* ``densevlm_ade20k_panoptic_val``: ``ADEChallengeData2016/images/validation/``,
  ``ADEChallengeData2016/ade20k_panoptic_val.json``, ``ADEChallengeData2016/ade20k_panoptic_val/``;
* ``densevlm_coco_train_images``: every ``coco/train2017/*.jpg`` (no annotations needed);
* ``densevlm_coco_train_proposals``: ``coco/annotations/coco_proposals.json`` (COCO-format boxes);
* ``densevlm_coco_train_pseudo_4764``: ``coco/annotations/coco_pseudo_4764.json`` (RegionCLIP's
  boxes labelled over a 4,764-noun concept pool; only images with boxes).

OV-COCO detection (48 base / 17 novel classes): ``densevlm_ovcoco_train_base`` and
``densevlm_ovcoco_val`` (``coco/annotations/instances_{train2017_ovcoco_base,val2017_ovcoco}.json``,
written by ``datasets/prepare_ov_coco.py``).

OV-LVIS instance segmentation (1,203 classes, the rare ones novel): ``densevlm_lvis_v1_train_base``
and ``densevlm_lvis_v1_val`` (``lvis/lvis_v1_{train_seen_1203_cat,val}.json``, the first written by
``datasets/prepare_ov_lvis.py``; images in ``coco/{train,val}2017``).

Semantic segmentation (``datasets/README.md``, "Semantic segmentation benchmarks"; label files
written by ``datasets/prepare_{coco_stuff_sem_seg,ade20k_sem_seg,ade20k_full_sem_seg,
pascal_context,voc}.py``): ``densevlm_coco_stuff_171_{train,val}_sem_seg``,
``densevlm_coco_object_val_sem_seg``, ``densevlm_ade20k_{150,847}_val_sem_seg``,
``densevlm_pascal_context_{59,459,60}_val_sem_seg``, ``densevlm_voc_{20,20b,21}_val_sem_seg``
(``sem_seg.SEM_SEG_BENCHMARKS`` lists the val ones in table order).

Vocabulary without a dataset: ``densevlm_coco_stuff_ade20k_316`` (COCO-Stuff + ADE20K, 204 things
and 112 stuff classes, the published DenseVLM training vocabulary).
"""

from __future__ import annotations

import os

from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from ..vocabulary import VOCABULARY_DIR, register_vocabulary
from .ade20k_categories import ADE20K_150
from .coco_boxes import register_coco_boxes, register_image_folder
from .ov_coco import register_ov_coco
from .ov_lvis import register_ov_lvis
from .panoptic import register_panoptic
from .sem_seg import register_sem_seg_benchmarks

__all__ = ["COCO_LAYOUT", "ADE20K_LAYOUT", "register_all"]

COCO_LAYOUT = """\
coco/
  train2017/  val2017/                     images (*.jpg)
  annotations/
    panoptic_train2017.json  panoptic_val2017.json
    panoptic_train2017/  panoptic_val2017/  panoptic PNGs (unzipped from panoptic_*2017.zip)
    coco_proposals.json  coco_pseudo_4764.json   region proposals / RegionCLIP pseudo labels"""

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
    coco = os.path.join(root, "coco")
    train_images = os.path.join(coco, "train2017")
    register_image_folder("densevlm_coco_train_images", train_images, COCO_LAYOUT)
    register_coco_boxes(
        "densevlm_coco_train_proposals",
        os.path.join(coco, "annotations", "coco_proposals.json"),
        train_images,
        COCO_LAYOUT,
    )
    register_coco_boxes(
        "densevlm_coco_train_pseudo_4764",
        os.path.join(coco, "annotations", "coco_pseudo_4764.json"),
        train_images,
        COCO_LAYOUT,
        only_annotated=True,
    )
    register_vocabulary(
        "densevlm_coco_stuff_ade20k_316", VOCABULARY_DIR / "coco_stuff_ade20k_316.json"
    )
    register_ov_coco(root)
    register_ov_lvis(root)
    register_sem_seg_benchmarks(root)


register_all()
