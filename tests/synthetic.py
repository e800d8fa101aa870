"""Synthetic panoptic datasets in the exact COCO panoptic on-disk format, for the tests: random
scenes (:func:`write_panoptic_split`) and a hand-drawn dataset whose expected numbers the tests
derive by hand (:func:`write_toy`). Both are written by the library's one writer of the format,
:class:`~densevlm_d2.data.datasets.panoptic_writer.PanopticWriter`.

The toy dataset is drawn on a 16-px cell grid. Classes (contiguous order = sorted ids): cat 0, dog
1, car 2 (never drawn), sky 3, grass 4, tree 5 (never drawn). Every cell of 16 x 16 pixels has one
colour, so a "token" of a patch-16 model is pure; the expected predictions of a model that reads
colours can be derived by hand.

Image 1 (64 x 96: 4 x 6 cells; on a 96-px canvas the bottom 2 token rows are padding)::

    S S C C S D      S sky, G grass, C cat, E dog, D dog (crowd), F dog whose annotated bbox
    S S C C S S      [0, 48, 16, 40] reaches 24 px into the padding; a 4 x 4 px cat ("tiny",
    G G G E E G      below the 8 x 8 size filter) sits in the bottom-right corner.
    F G G G G G

Image 2 (96 x 64: 6 x 4 cells; the right 2 token columns of the canvas are padding)::

    S S S S
    S C C S
    S C C S
    G G G G
    G G E G
    G G G G
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from densevlm_d2.data.datasets.panoptic import segment_record
from densevlm_d2.data.datasets.panoptic_writer import PanopticWriter

__all__ = ["CATEGORIES", "random_scene", "write_panoptic_split", "write_toy"]


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
    ids = list(image_ids) if image_ids is not None else list(range(1, num_images + 1))
    with PanopticWriter(json_file, pan_dir, categories, image_dir) as writer:
        for image_id in ids[:num_images]:
            h, w = (int(v) for v in rng.integers(size_range[0], size_range[1], size=2))
            image, seg, segments = random_scene(rng, h, w, things, stuff)
            stem = f"{image_id:012d}" if isinstance(image_id, int) else str(image_id)
            writer.add(image_id, stem, seg, segments, image)
    return {
        "images": writer.images,
        "annotations": writer.annotations,
        "categories": list(categories),
    }


CATEGORIES = [
    {"id": 1, "name": "cat", "isthing": 1, "color": [200, 30, 30]},
    {"id": 2, "name": "dog", "isthing": 1, "color": [30, 200, 30]},
    {"id": 3, "name": "car", "isthing": 1, "color": [30, 30, 200]},
    {"id": 10, "name": "sky", "isthing": 0, "color": [220, 220, 60]},
    {"id": 11, "name": "grass", "isthing": 0, "color": [40, 200, 200]},
    {"id": 12, "name": "tree", "isthing": 0, "color": [200, 40, 200]},
]
CAT, DOG, SKY, GRASS = 1, 2, 10, 11

# letter -> (segment id, category id, iscrowd); segments listed in json order per image
IMAGES = [
    {
        "cells": ["SSCCSD", "SSCCSS", "GGGEEG", "FGGGGG"],
        "segments": [
            ("S", 101, SKY, 0),
            ("G", 102, GRASS, 0),
            ("C", 103, CAT, 0),
            ("E", 104, DOG, 0),
            ("D", 105, DOG, 1),
            ("T", 106, CAT, 0),
            ("F", 107, DOG, 0),
        ],
        "tiny": (60, 92, 4),  # letter T: rows 60-63, cols 92-95
        "bbox_override": {"F": [0, 48, 16, 40]},
    },
    {
        "cells": ["SSSS", "SCCS", "SCCS", "GGGG", "GGEG", "GGGG"],
        "segments": [
            ("S", 201, SKY, 0),
            ("G", 202, GRASS, 0),
            ("C", 203, CAT, 0),
            ("E", 204, DOG, 0),
        ],
    },
]


def write_toy(image_dir: str, pan_dir: str, json_file: str, image_ids=(1, 2)) -> dict:
    """Write the hand-drawn dataset (module docstring); returns the json dict."""
    colors = {c["id"]: c["color"] for c in CATEGORIES}
    with PanopticWriter(json_file, pan_dir, CATEGORIES, image_dir, image_quality=100) as writer:
        for image_id, spec in zip(image_ids, IMAGES, strict=True):
            cells = spec["cells"]
            h, w = 16 * len(cells), 16 * len(cells[0])
            letters = np.array([[ch for ch in row] for row in cells]).repeat(16, 0).repeat(16, 1)
            if "tiny" in spec:
                y, x, s = spec["tiny"]
                letters[y : y + s, x : x + s] = "T"
            seg_ids = np.zeros((h, w), np.int64)
            image = np.zeros((h, w, 3), np.uint8)
            infos = []
            for letter, seg_id, cat, crowd in spec["segments"]:
                mask = letters == letter
                seg_ids[mask] = seg_id
                image[mask] = colors[cat]
                info = segment_record(seg_id, cat, mask, crowd)
                info["bbox"] = spec.get("bbox_override", {}).get(letter, info["bbox"])
                infos.append(info)
            stem = f"{image_id:012d}" if isinstance(image_id, int) else image_id
            writer.add(image_id, stem, seg_ids, infos, image)
    return {
        "images": writer.images,
        "annotations": writer.annotations,
        "categories": CATEGORIES,
    }
