"""Panoptic datasets in the COCO panoptic on-disk format: loading, layout checks, registration.

The dataset dicts follow detectron2's panoptic format (``file_name``, ``image_id``,
``pan_seg_file_name``, ``segments_info`` with contiguous ``category_id`` and ``isthing``) plus
``height``/``width``. Contiguous ids are the index of the category id in the sorted list of the
dataset's category ids, as the published evaluation labels classes. Image ids may be strings
(ADE20K) or integers (COCO).

Metadata: ``vocabulary`` (a :class:`~densevlm_d2.clip.Vocabulary`: all class names in contiguous
order with their thing/stuff flags), ``class_colors`` and ``category_id_to_contiguous_id`` are this
project's explicit keys; detectron2's "standard" panoptic keys (``thing_classes`` and
``stuff_classes`` both listing every class, ``thing_dataset_id_to_contiguous_id``,
``stuff_dataset_id_to_contiguous_id``, colours) are set too
so detectron2's tools work on these datasets.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Sequence

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from panopticapi.utils import rgb2id
from PIL import Image

from ...clip.preprocess import load_rgb
from ...clip.vocabulary import Vocabulary

__all__ = [
    "DatasetFormatError",
    "DatasetLayoutError",
    "segment_record",
    "check_layout",
    "load_panoptic_json",
    "panoptic_metadata",
    "read_panoptic_pair",
    "register_panoptic",
]


class DatasetLayoutError(FileNotFoundError):
    """A file or folder of a registered dataset is missing; the message names it and the layout."""


class DatasetFormatError(ValueError):
    """A dataset file is inconsistent; the message names the file, the image and the segment."""


def _check_unique(where: str, what: str, values: list) -> None:
    repeated = sorted(str(v) for v, count in Counter(values).items() if count > 1)
    if repeated:
        raise DatasetFormatError(f"{where}: {what}s are not unique: {repeated[:10]} repeat")


def check_layout(paths: dict[str, str], layout: str) -> None:
    """Raise :class:`DatasetLayoutError` naming the first missing path and the documented
    ``layout``."""
    for what, path in paths.items():
        exists = os.path.isdir(path) if what.endswith("dir") else os.path.isfile(path)
        if not exists:
            root = os.environ.get("DETECTRON2_DATASETS")
            now = f"now {root!r}" if root else "not set: the built-in datasets use 'datasets'"
            raise DatasetLayoutError(
                f"{what} not found: {path}\nExpected layout under $DETECTRON2_DATASETS "
                f"({now}; see datasets/README.md):\n{layout}"
            )


def segment_record(seg_id: int, category_id: int, mask: np.ndarray, iscrowd: int = 0) -> dict:
    """The ``segments_info`` entry of a binary mask as the COCO panoptic format defines it: the
    tight bbox ``[x, y, w, h]`` and the area of the mask's pixels."""
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return {
        "id": int(seg_id),
        "category_id": int(category_id),
        "iscrowd": int(iscrowd),
        "bbox": [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1],
        "area": int(mask.sum()),
    }


def panoptic_metadata(categories: Sequence[dict], name: str = "panoptic categories") -> dict:
    """Metadata for a list of ``{"id", "name", "isthing", "color"}`` categories (``color`` is
    optional: detectron2's random colours, fixed by the id, are used where it is missing);
    ``name``: the dataset's, the vocabulary's source."""
    missing = [c for c in categories if not {"id", "name", "isthing"} <= set(c)]
    if missing or not categories:
        raise DatasetFormatError(
            "categories need 'id', 'name' and 'isthing' (and optionally 'color'); "
            f"got {missing[:3] or 'none'}"
        )
    cats = sorted(categories, key=lambda c: c["id"])
    names = [c["name"] for c in cats]
    colors = [list(c["color"]) if "color" in c else _fixed_color(c["id"]) for c in cats]
    is_thing = [bool(c["isthing"]) for c in cats]
    to_contiguous = {c["id"]: i for i, c in enumerate(cats)}
    return {
        "vocabulary": Vocabulary(names=tuple(names), is_thing=tuple(is_thing), source=name),
        "class_colors": colors,
        "category_id_to_contiguous_id": to_contiguous,
        # detectron2's "standard" panoptic convention: both lists hold every class
        "thing_classes": names,
        "thing_colors": colors,
        "stuff_classes": names,
        "stuff_colors": colors,
        "thing_dataset_id_to_contiguous_id": {
            c["id"]: i for i, c in enumerate(cats) if c["isthing"]
        },
        "stuff_dataset_id_to_contiguous_id": {
            c["id"]: i for i, c in enumerate(cats) if not c["isthing"]
        },
    }


def load_panoptic_json(
    json_file: str, image_dir: str, gt_dir: str, meta: dict, layout: str = ""
) -> list[dict]:
    """A COCO-panoptic-format json -> detectron2 dataset dicts, images in the json's order."""
    check_layout(
        {"panoptic json": json_file, "image dir": image_dir, "panoptic PNG dir": gt_dir}, layout
    )
    try:
        with open(json_file) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetFormatError(f"{json_file} is not valid json: {e}") from None
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise DatasetFormatError(f"{json_file} has no '{key}' list (COCO panoptic format)")
    to_contiguous = meta["category_id_to_contiguous_id"]
    file_ids = {c["id"] for c in data.get("categories", [])}
    if file_ids and file_ids != set(to_contiguous):
        raise ValueError(
            f"{json_file}: its {len(file_ids)} categories do not match the registered vocabulary "
            f"of {len(to_contiguous)} classes (ids that differ: "
            f"{sorted(file_ids ^ set(to_contiguous))[:10]})"
        )
    _check_unique(json_file, "image id", [img["id"] for img in data["images"]])
    _check_unique(
        json_file, "annotation image id", [ann["image_id"] for ann in data["annotations"]]
    )
    annotations = {ann["image_id"]: ann for ann in data["annotations"]}
    dicts = []
    for img in data["images"]:
        ann = annotations.get(img["id"])
        if ann is None:
            continue
        segments = []
        where = f"{json_file}, image id {img['id']!r}"
        _check_unique(where, "segment id", [seg["id"] for seg in ann["segments_info"]])
        for seg in ann["segments_info"]:
            seg = dict(seg)
            if seg["category_id"] not in to_contiguous:
                raise DatasetFormatError(
                    f"{where}, segment {seg['id']}: unknown category id {seg['category_id']} "
                    f"(the dataset's categories have ids {sorted(to_contiguous)[:10]} ...)"
                )
            box = seg.get("bbox")
            if box is None or len(box) != 4 or not all(math.isfinite(float(v)) for v in box):
                raise DatasetFormatError(
                    f"{where}, segment {seg['id']}: bbox {box!r} is not 4 finite numbers"
                )
            seg["category_id"] = to_contiguous[seg["category_id"]]
            seg["isthing"] = meta["vocabulary"].is_thing[seg["category_id"]]
            segments.append(seg)
        dicts.append(
            {
                "file_name": os.path.join(image_dir, img["file_name"]),
                "image_id": img["id"],
                "height": img["height"],
                "width": img["width"],
                "pan_seg_file_name": os.path.join(gt_dir, ann["file_name"]),
                "segments_info": segments,
            }
        )
    if not dicts:
        raise ValueError(f"{json_file} has no annotated images")
    return dicts


def read_panoptic_pair(record: dict) -> tuple[Image.Image, np.ndarray, set[int]]:
    """Decode an image and its panoptic PNG and check them against the record's segments.

    Returns (RGB image, segment-id map, ids of stuff segments with no pixels). A stuff segment whose
    pixels were all painted over by things is what Mask2Former's ADE20K panoptic preparation
    writes (it lists stuff before pasting things); it is returned for the caller to skip and count.
    Anything else inconsistent is a :class:`DatasetFormatError` naming the files, the image and the
    segments: an image or PNG that cannot be decoded, sizes that differ, a thing segment with no
    pixels, pixels of a segment the json does not list.
    """
    where = f"image id {record['image_id']!r}"
    image = load_rgb(record["file_name"], where)
    png_path = record["pan_seg_file_name"]
    if not os.path.isfile(png_path):
        raise DatasetFormatError(f"panoptic PNG not found: {png_path} ({where})")
    try:
        with Image.open(png_path) as png:
            pan = rgb2id(np.asarray(png.convert("RGB"), dtype=np.uint8))
    except OSError as e:
        raise DatasetFormatError(f"cannot decode {png_path} ({where}): {e}") from None
    if pan.shape != (image.height, image.width):
        raise DatasetFormatError(
            f"{png_path} is {pan.shape[1]}x{pan.shape[0]} but {record['file_name']} is "
            f"{image.width}x{image.height} ({where})"
        )
    if (record.get("height"), record.get("width")) not in ((None, None), pan.shape):
        raise DatasetFormatError(
            f"{where}: the json says {record['width']}x{record['height']} but "
            f"{record['file_name']} is {image.width}x{image.height}"
        )
    present = set(np.unique(pan).tolist()) - {0}
    listed = {seg["id"]: seg for seg in record["segments_info"]}
    unlisted = sorted(present - set(listed))
    if unlisted:
        raise DatasetFormatError(
            f"{png_path} ({where}) has pixels of segment ids {unlisted[:10]} that the json does "
            "not list"
        )
    absent = [i for i in listed if i not in present]
    absent_things = [i for i in absent if listed[i]["isthing"]]
    if absent_things:
        raise DatasetFormatError(
            f"{where}: thing segment(s) {absent_things[:10]} of the json have no pixels in "
            f"{png_path}"
        )
    return image, pan, set(absent)


def _fixed_color(seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(v) for v in rng.integers(0, 256, 3)]


def register_panoptic(
    name: str,
    categories: Sequence[dict] | None,
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    layout: str = "",
) -> None:
    """Register ``name`` lazily (images and annotations are read on first use); a second call is a
    no-op. ``categories=None`` takes them from the json's ``categories`` now (your own datasets);
    ``layout`` is shown when a file is missing."""
    if name in DatasetCatalog.list():
        return
    if categories is None:
        check_layout({"panoptic json": panoptic_json}, layout)
        with open(panoptic_json) as f:
            categories = json.load(f).get("categories") or []
    meta = panoptic_metadata(categories, name)
    DatasetCatalog.register(
        name, lambda: load_panoptic_json(panoptic_json, image_root, panoptic_root, meta, layout)
    )
    MetadataCatalog.get(name).set(
        image_root=image_root,
        panoptic_root=panoptic_root,
        panoptic_json=panoptic_json,
        evaluator_type="region_accuracy",
        ignore_label=255,
        label_divisor=1000,
        **meta,
    )
