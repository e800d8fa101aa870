"""Synthetic panoptic datasets in the exact COCO panoptic on-disk format, for tests and benchmarks.

Nothing in the library uses this module. Where no COCO or ADE20K data can be had it writes: JPEG
images, panoptic PNGs whose RGB colour encodes the segment id (panopticapi's ``id2rgb``), and a json
with ``images``, ``annotations`` (``segments_info`` with ``id``, ``category_id``, ``iscrowd``,
``bbox`` = [x, y, w, h] of the segment's pixels, ``area``) and ``categories``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
from panopticapi.utils import id2rgb
from PIL import Image

from .data.datasets.panoptic import segment_record

__all__ = ["random_scene", "write_panoptic_split"]


def random_scene(
    rng: np.random.Generator,
    height: int,
    width: int,
    things: Sequence[dict],
    stuff: Sequence[dict],
    max_things: int = 4,
):
    """One image with horizontal stuff bands and rectangular/elliptic things on top.

    Returns (image HxWx3 uint8, segment-id map HxW int, list of (segment id, category id, iscrowd)).
    """
    ids = np.zeros((height, width), np.int64)
    image = np.zeros((height, width, 3), np.float32)
    segments = []
    next_id = int(rng.integers(1, 1000))
    cuts = np.sort(
        rng.choice(
            np.arange(height // 5, height - height // 5), size=min(2, len(stuff)), replace=False
        )
    )
    bands = np.split(np.arange(height), cuts)
    for rows, cat in zip(
        bands, rng.choice(len(stuff), size=len(bands), replace=False), strict=True
    ):
        ids[rows] = next_id
        image[rows] = np.asarray(stuff[cat]["color"], np.float32)
        segments.append((next_id, stuff[cat]["id"], 0))
        next_id += int(rng.integers(1, 50))
    yy, xx = np.mgrid[:height, :width]
    for _ in range(int(rng.integers(1, max_things + 1))):
        cat = things[int(rng.integers(len(things)))]
        h, w = (
            int(rng.integers(height // 8, height // 2)),
            int(rng.integers(width // 8, width // 2)),
        )
        y, x = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
        if rng.random() < 0.5:
            mask = (yy >= y) & (yy < y + h) & (xx >= x) & (xx < x + w)
        else:
            mask = ((yy - y - h / 2) / (h / 2)) ** 2 + ((xx - x - w / 2) / (w / 2)) ** 2 <= 1
        if mask.sum() < 4:
            continue
        ids[mask] = next_id
        image[mask] = np.asarray(cat["color"], np.float32)
        segments.append((next_id, cat["id"], int(rng.random() < 0.1)))
        next_id += int(rng.integers(1, 50))
    image += rng.normal(0, 12, image.shape)
    present = set(np.unique(ids).tolist())
    segments = [s for s in segments if s[0] in present]  # fully covered segments are dropped
    return np.clip(image, 0, 255).astype(np.uint8), ids, segments


def write_panoptic_split(
    image_dir: str,
    pan_dir: str,
    json_file: str,
    categories: Sequence[dict],
    num_images: int,
    seed: int = 0,
    size_range=(120, 260),
    image_ids: Sequence | None = None,
) -> dict:
    """Write ``num_images`` random scenes; returns the json dict that was written.

    ``categories`` are ``{"id", "name", "isthing", "color"}`` dicts (at least one thing, one stuff).
    ``image_ids`` (default 1..N) may be strings, as in ADE20K's panoptic json.
    """
    rng = np.random.default_rng(seed)
    things = [c for c in categories if c["isthing"]]
    stuff = [c for c in categories if not c["isthing"]]
    for d in (image_dir, pan_dir, os.path.dirname(json_file) or "."):
        os.makedirs(d, exist_ok=True)
    images, annotations = [], []
    ids = list(image_ids) if image_ids is not None else list(range(1, num_images + 1))
    for image_id in ids[:num_images]:
        h, w = (int(v) for v in rng.integers(size_range[0], size_range[1], size=2))
        image, seg, segments = random_scene(rng, h, w, things, stuff)
        stem = f"{image_id:012d}" if isinstance(image_id, int) else str(image_id)
        Image.fromarray(image).save(os.path.join(image_dir, stem + ".jpg"), quality=95)
        Image.fromarray(id2rgb(seg)).save(os.path.join(pan_dir, stem + ".png"))
        images.append({"id": image_id, "file_name": stem + ".jpg", "height": h, "width": w})
        annotations.append(
            {
                "image_id": image_id,
                "file_name": stem + ".png",
                "segments_info": [
                    segment_record(i, c, seg == i, crowd) for i, c, crowd in segments
                ],
            }
        )
    data = {"images": images, "annotations": annotations, "categories": list(categories)}
    with open(json_file, "w") as f:
        json.dump(data, f)
    return data
