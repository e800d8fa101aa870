"""A COCO-panoptic dataset as semantic-segmentation label files (a view for
:func:`~densevlm_d2.data.datasets.sem_seg.register_sem_seg`).

Each panoptic PNG becomes a single-channel PNG of the same stem holding, per pixel, the contiguous
class index of its segment's category: the index of the category id in the sorted list of the
dataset's category ids, the order :func:`~densevlm_d2.data.datasets.panoptic.panoptic_metadata`
and the region evaluation use. Pixels of no listed segment (id 0, "void") get ``ignore_label``;
crowd segments are labelled with their class (as detectron2's COCO panoptic -> semantic
conversion does) unless ``crowd_as_ignore``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
from panopticapi.utils import rgb2id
from PIL import Image

from ...utils.files import atomic_folder
from .panoptic import DatasetFormatError, check_layout

__all__ = ["panoptic_to_semantic", "semantic_classes"]


def semantic_classes(categories: Sequence[dict]) -> list[str]:
    """The class names of panoptic ``categories`` in label order (sorted category ids)."""
    return [c["name"] for c in sorted(categories, key=lambda c: c["id"])]


def panoptic_to_semantic(
    panoptic_json: str | os.PathLike,
    panoptic_root: str | os.PathLike,
    sem_seg_root: str | os.PathLike,
    *,
    categories: Sequence[dict] | None = None,
    ignore_label: int = 255,
    crowd_as_ignore: bool = False,
) -> list[str]:
    """Write ``sem_seg_root/<stem>.png`` for every annotation of ``panoptic_json``; returns the
    class names in label order.

    ``categories`` defaults to the json's ``categories``; a segment whose category is not among
    them is a :class:`DatasetFormatError`. Labels are uint8 PNGs (fewer than 255 classes) or 16-bit
    PNGs otherwise; ``ignore_label`` must not be a class index.
    """
    panoptic_json, panoptic_root = str(panoptic_json), str(panoptic_root)
    check_layout({"panoptic json": panoptic_json, "panoptic PNG dir": panoptic_root}, "")
    with open(panoptic_json) as f:
        data = json.load(f)
    categories = list(categories if categories is not None else data.get("categories") or [])
    if not categories:
        raise DatasetFormatError(f"{panoptic_json}: no categories")
    ids = sorted(c["id"] for c in categories)
    to_index = {cid: i for i, cid in enumerate(ids)}
    if 0 <= ignore_label < len(ids):
        raise ValueError(f"ignore_label {ignore_label} is a class index of {len(ids)} classes")
    dtype = np.uint8 if max(len(ids) - 1, ignore_label) <= 255 else np.uint16
    with atomic_folder(sem_seg_root) as out:  # a folder that exists is complete
        for ann in data["annotations"]:
            with Image.open(os.path.join(panoptic_root, ann["file_name"])) as im:
                pan = rgb2id(np.asarray(im.convert("RGB"), dtype=np.uint8))
            # a lookup table from segment id to label: every id not listed stays ignore_label
            seg_ids = [s["id"] for s in ann["segments_info"]]
            lut = np.full(max([int(pan.max()), *seg_ids]) + 1, ignore_label, np.int64)
            for seg in ann["segments_info"]:
                if seg["category_id"] not in to_index:
                    raise DatasetFormatError(
                        f"{panoptic_json}: image {ann['image_id']}, segment {seg['id']}: "
                        f"category {seg['category_id']} is not among the categories"
                    )
                if not (crowd_as_ignore and seg.get("iscrowd", 0)):
                    lut[seg["id"]] = to_index[seg["category_id"]]
            stem = os.path.splitext(ann["file_name"])[0]
            Image.fromarray(lut[pan].astype(dtype)).save(out / f"{stem}.png")
    return semantic_classes(categories)
