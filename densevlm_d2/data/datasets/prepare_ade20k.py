"""Build ADE20K panoptic annotations (COCO panoptic format) from the ADEChallengeData2016 release.

Inputs, per image ``<stem>``: ``images/<split>/<stem>.jpg``; ``annotations/<split>/<stem>.png``
(semantic labels: 0 void, 1..150 SceneParse150 classes); ``annotations_instance/<split>/<stem>.png``
(RGB; red = instance-challenge class 1..100, 0 = none; green = instance index, 0 = none).

Output: ``ade20k_panoptic_<name>.json`` and ``ade20k_panoptic_<name>/<stem>.png``, the layout and
conventions of Mask2Former's ADE20K panoptic preparation, which the published evaluation used:
category ids are the 0-based SceneParse150 indices (``ADE20K_150``); stuff segments come from the
semantic map (one per stuff class present, in class order) and are painted first; thing segments
come from the instance map (one per instance index, in index order, class mapped by
``INSTANCE100_TO_SEMANTIC150``) and are painted over them. Segment ids are
``1000 * (category id + 1) + k`` (k = 0 for stuff, the instance index for things). Each segment's
``area`` and ``bbox`` ([x, y, w, h]) describe its pixels in the written PNG; segments left with no
pixels are not listed.
"""

from __future__ import annotations

import glob
import os

import numpy as np
from PIL import Image

from .ade20k_categories import ADE20K_150, INSTANCE100_TO_SEMANTIC150
from .panoptic import segment_record
from .panoptic_writer import PanopticWriter

__all__ = ["ade20k_panoptic_segments", "prepare_ade20k_panoptic"]

_SPLIT_DIRS = {"val": "validation", "train": "training"}


def ade20k_panoptic_segments(semantic: np.ndarray, instance: np.ndarray):
    """(H, W) semantic labels and (H, W, 3) instance PNG -> (segment-id map, ``segments_info``)."""
    if semantic.shape != instance.shape[:2]:
        raise ValueError(
            f"semantic map {semantic.shape} and instance map {instance.shape[:2]} differ"
        )
    seg = np.zeros(semantic.shape, np.int64)
    order = []
    for sem in np.unique(semantic):
        if sem == 0 or ADE20K_150[sem - 1]["isthing"]:
            continue
        seg_id = 1000 * int(sem)
        seg[semantic == sem] = seg_id
        order.append((seg_id, int(sem) - 1))
    ins_class, ins_index = instance[..., 0], instance[..., 1]
    for index in np.unique(ins_index):
        if index == 0:
            continue
        mask = ins_index == index
        classes = np.unique(ins_class[mask])
        if len(classes) != 1 or not 1 <= classes[0] <= len(INSTANCE100_TO_SEMANTIC150):
            raise ValueError(f"instance {index} has instance classes {classes.tolist()}")
        category = INSTANCE100_TO_SEMANTIC150[classes[0] - 1] - 1
        seg_id = 1000 * (category + 1) + int(index)
        seg[mask] = seg_id
        order.append((seg_id, category))
    segments = [segment_record(i, c, seg == i) for i, c in order if (seg == i).any()]
    return seg, segments


def prepare_ade20k_panoptic(ade_root: str, split: str = "val", progress: bool = True) -> str:
    """Write ``ade20k_panoptic_<split>.json`` and PNGs under ``ade_root``; returns the json path."""
    from tqdm import tqdm

    sub = _SPLIT_DIRS[split]
    image_dir = os.path.join(ade_root, "images", sub)
    semantic_dir = os.path.join(ade_root, "annotations", sub)
    instance_dir = os.path.join(ade_root, "annotations_instance", sub)
    for path in (image_dir, semantic_dir, instance_dir):
        if not os.path.isdir(path):
            raise FileNotFoundError(
                f"{path} not found: expected ADEChallengeData2016/{{images,annotations,"
                f"annotations_instance}}/{sub}/ (see datasets/README.md for the downloads)"
            )
    out_dir = os.path.join(ade_root, f"ade20k_panoptic_{split}")
    json_file = os.path.join(ade_root, f"ade20k_panoptic_{split}.json")
    files = sorted(glob.glob(os.path.join(image_dir, "*.jpg")))
    with PanopticWriter(json_file, out_dir, ADE20K_150) as writer:
        for path in tqdm(files, desc=f"ADE20K panoptic {split}", disable=not progress):
            stem = os.path.splitext(os.path.basename(path))[0]
            with Image.open(path) as img:
                width, height = img.size
            semantic = np.asarray(Image.open(os.path.join(semantic_dir, stem + ".png")))
            instance = np.asarray(
                Image.open(os.path.join(instance_dir, stem + ".png")).convert("RGB")
            )
            seg, segments = ade20k_panoptic_segments(semantic, instance)
            if seg.shape != (height, width):
                raise ValueError(
                    f"{stem}: annotations are {seg.shape[::-1]}, image is {(width, height)}"
                )
            writer.add(stem, stem, seg, segments)
    return json_file
