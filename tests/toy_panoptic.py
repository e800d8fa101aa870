"""A hand-drawn panoptic dataset on a 16-px cell grid, in the exact COCO/ADE panoptic format.

Classes (contiguous order = sorted ids): cat 0, dog 1, car 2 (never drawn), sky 3, grass 4,
tree 5 (never drawn). Every cell of 16 x 16 pixels has one colour, so a "token" of a patch-16 model
is pure; the expected predictions of a model that reads colours can be derived by hand.

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

import json
import os

from densevlm_d2.data.datasets.panoptic import segment_record

import numpy as np
from panopticapi.utils import id2rgb
from PIL import Image

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
    colors = {c["id"]: c["color"] for c in CATEGORIES}
    for d in (image_dir, pan_dir, os.path.dirname(json_file)):
        os.makedirs(d, exist_ok=True)
    images, annotations = [], []
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
        Image.fromarray(image).save(os.path.join(image_dir, stem + ".jpg"), quality=100)
        Image.fromarray(id2rgb(seg_ids)).save(os.path.join(pan_dir, stem + ".png"))
        images.append({"id": image_id, "file_name": stem + ".jpg", "height": h, "width": w})
        annotations.append(
            {"image_id": image_id, "file_name": stem + ".png", "segments_info": infos}
        )
    data = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    with open(json_file, "w") as f:
        json.dump(data, f)
    return data
