"""Training image sets: COCO train2017 images alone, and COCO-format box files (proposals, pseudo
labels) over them."""

from __future__ import annotations

import functools
import json
import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from ...clip.vocabulary import Vocabulary
from .panoptic import check_layout

__all__ = ["load_coco_boxes", "load_image_folder", "register_coco_boxes", "register_image_folder"]


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def load_image_folder(image_dir: str, layout: str = "") -> list[dict]:
    """``{"file_name", "image_id"}`` for every image (``.jpg``, ``.jpeg``, ``.png``) of a folder,
    sorted by name."""
    check_layout({"image dir": image_dir}, layout)
    names = sorted(n for n in os.listdir(image_dir) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {image_dir}")
    return [
        {"file_name": os.path.join(image_dir, n), "image_id": os.path.splitext(n)[0]} for n in names
    ]


def load_coco_boxes(
    json_file: str, image_dir: str, layout: str = "", only_annotated: bool = False
) -> tuple[list[dict], list[str]]:
    """A COCO-format json (``images``, ``annotations`` with ``bbox`` [x, y, w, h] and
    ``category_id``, ``categories``) -> dataset dicts with ``annotations`` in the json's order and
    contiguous ``category_id`` (index in the sorted category ids), and the category names."""
    check_layout({"box json": json_file, "image dir": image_dir}, layout)
    with open(json_file) as f:
        data = json.load(f)
    cats = sorted(data.get("categories", []), key=lambda c: c["id"])
    to_contiguous = {c["id"]: i for i, c in enumerate(cats)}
    per_image: dict = {}
    for ann in data.get("annotations", []):
        entry = {"bbox": [float(v) for v in ann["bbox"]]}
        if "category_id" in ann and to_contiguous:
            entry["category_id"] = to_contiguous[ann["category_id"]]
        per_image.setdefault(ann["image_id"], []).append(entry)
    dicts = []
    for img in data["images"]:
        anns = per_image.get(img["id"], [])
        if only_annotated and not anns:
            continue
        dicts.append(
            {
                "file_name": os.path.join(image_dir, img["file_name"]),
                "image_id": img["id"],
                "height": img.get("height"),
                "width": img.get("width"),
                "annotations": anns,
            }
        )
    return dicts, [c["name"] for c in cats]


def register_image_folder(name: str, image_dir: str, layout: str = "") -> None:
    if name in DatasetCatalog.list():
        return
    DatasetCatalog.register(
        name, functools.lru_cache(maxsize=1)(lambda: load_image_folder(image_dir, layout))
    )
    MetadataCatalog.get(name).set(image_root=image_dir)


def register_coco_boxes(
    name: str, json_file: str, image_dir: str, layout: str = "", only_annotated: bool = False
) -> None:
    """Register lazily; the category names become the dataset's ``vocabulary`` when it is loaded
    (:func:`~densevlm_d2.data.dataset_vocabulary` loads it when asked for them)."""
    if name in DatasetCatalog.list():
        return

    @functools.lru_cache(maxsize=1)
    def load():
        dicts, classes = load_coco_boxes(json_file, image_dir, layout, only_annotated)
        if classes:
            MetadataCatalog.get(name).set(vocabulary=Vocabulary.from_names(classes, source=name))
        return dicts

    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(image_root=image_dir, json_file=json_file)
