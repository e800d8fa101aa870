"""OV-COCO: the open-vocabulary COCO detection benchmark (48 base / 17 novel classes of COCO 2017).

Training uses only the base classes' boxes of ``instances_train2017.json`` (images with none are
dropped by detectron2's ``DATALOADER.FILTER_EMPTY_ANNOTATIONS``); evaluation uses all 65 classes of
``instances_val2017.json``. The category order (label ``i`` = ``OV_COCO_CLASSES[i]``) is the COCO
id order, as in the published F-ViT json files (``instances_train2017_seen_2_65_cat.json``,
``instances_val2017_all_2.json``), which are accepted as well.

:func:`prepare_ov_coco_json` writes the two files from the standard COCO 2017 instances files
(``datasets/prepare_ov_coco.py``).
"""

from __future__ import annotations

import json
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from ...clip.vocabulary import Vocabulary
from ...utils.files import atomic_write
from .panoptic import check_layout

__all__ = [
    "OV_COCO_BASE",
    "OV_COCO_CLASSES",
    "OV_COCO_LAYOUT",
    "OV_COCO_NOVEL",
    "prepare_ov_coco_json",
    "register_ov_coco",
    "register_ov_coco_instances",
]

# label order of the published 65-class files (COCO category id order)
OV_COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "bench",
    "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe",
    "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "kite",
    "skateboard", "surfboard", "bottle", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "pizza", "donut", "cake", "chair", "couch", "bed",
    "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "toothbrush",
)  # fmt: skip
OV_COCO_NOVEL = (
    "airplane", "bus", "cat", "dog", "cow", "elephant", "umbrella", "tie", "snowboard",
    "skateboard", "cup", "knife", "cake", "couch", "keyboard", "sink", "scissors",
)  # fmt: skip
OV_COCO_BASE = tuple(c for c in OV_COCO_CLASSES if c not in OV_COCO_NOVEL)
assert len(OV_COCO_CLASSES) == 65 and len(OV_COCO_BASE) == 48 and len(OV_COCO_NOVEL) == 17

OV_COCO_LAYOUT = """\
coco/
  train2017/  val2017/                     images (*.jpg)
  annotations/
    instances_train2017_ovcoco_base.json   base-class boxes, 65 categories (prepare_ov_coco.py)
    instances_val2017_ovcoco.json          all 65 classes' boxes (prepare_ov_coco.py)"""


def prepare_ov_coco_json(instances_json: str, out_json: str, keep: str = "all") -> dict:
    """Filter a COCO instances json to the 65 OV-COCO categories; ``keep="base"`` also drops the
    novel classes' annotations (the training file). Written atomically; returns counts."""
    if keep not in ("all", "base"):
        raise ValueError(f"keep must be 'all' or 'base', got {keep!r}")
    with open(instances_json) as f:
        data = json.load(f)
    by_name = {c["name"]: c for c in data["categories"]}
    missing = [n for n in OV_COCO_CLASSES if n not in by_name]
    if missing:
        raise ValueError(f"{instances_json} lacks the OV-COCO categories {missing}")
    cats = sorted((by_name[n] for n in OV_COCO_CLASSES), key=lambda c: c["id"])
    allowed = {by_name[n]["id"] for n in (OV_COCO_BASE if keep == "base" else OV_COCO_CLASSES)}
    anns = [a for a in data["annotations"] if a["category_id"] in allowed]
    out = {k: v for k, v in data.items() if k not in ("annotations", "categories")}
    out.update(categories=cats, annotations=anns)
    with atomic_write(out_json, binary=False) as f:
        json.dump(out, f)
    return {"images": len(out["images"]), "annotations": len(anns), "categories": len(cats)}


def register_ov_coco_instances(
    name: str,
    json_file: str,
    image_root: str,
    novel_classes: tuple[str, ...] | list[str],
    layout: str = "",
) -> None:
    """Register a COCO instances json for open-vocabulary detection: its ``vocabulary`` is the
    json's categories (category id order; detectron2's ``thing_classes``) with ``novel_classes``
    (zero training weight, fused with the CLIP score at test time with the novel exponent), set
    when the json is read; ``evaluator_type="ov_coco"``."""

    def load():
        check_layout({"instances json": json_file, "image dir": image_root}, layout)
        dicts = load_coco_json(json_file, image_root, name)
        meta = MetadataCatalog.get(name)
        classes = meta.thing_classes
        unknown = [c for c in novel_classes if c not in classes]
        if unknown:
            raise ValueError(f"{name}: novel classes {unknown} are not categories of {json_file}")
        meta.set(vocabulary=Vocabulary.from_names(classes, source=name, novel=tuple(novel_classes)))
        return dicts

    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(
        json_file=json_file, image_root=image_root, evaluator_type="ov_coco"
    )


def register_ov_coco(root: str) -> None:
    """``densevlm_ovcoco_train_base`` and ``densevlm_ovcoco_val`` under ``root/coco``."""
    coco = os.path.join(root, "coco")
    for name, split, file in (
        ("densevlm_ovcoco_train_base", "train2017", "instances_train2017_ovcoco_base.json"),
        ("densevlm_ovcoco_val", "val2017", "instances_val2017_ovcoco.json"),
    ):
        register_ov_coco_instances(
            name,
            os.path.join(coco, "annotations", file),
            os.path.join(coco, split),
            OV_COCO_NOVEL,
            OV_COCO_LAYOUT,
        )
        # known before the json is read, so that models can be built without the data
        MetadataCatalog.get(name).set(
            thing_classes=list(OV_COCO_CLASSES),
            vocabulary=Vocabulary(names=OV_COCO_CLASSES, novel=OV_COCO_NOVEL, source=name),
        )
