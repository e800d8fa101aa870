"""A small world in which the foreground bias of image-level CLIP training can be seen on a CPU.

Scenes are made of "stuff" backgrounds (sky, grass, water, wall, sand: textures that fill regions)
and "thing" objects (ball, box, tent, kite, ring, cross: shapes, each in two paints of its own).
Every image has a caption that, like web captions, names its things ("a red ball and a purple
cross") and only sometimes its background. The world is written in the exact COCO panoptic on-disk
format (JPEG images, panoptic PNGs, json) with a ``captions.csv`` (``filepath``, ``title``) per
split, and a ``crops.csv`` of region crops named by their class (``a photo of a sand.``) for
training the teacher. Everything is deterministic from the seed.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from densevlm_d2.data.datasets.panoptic_writer import PanopticWriter

from .register import CATEGORIES, NOVEL_THINGS

__all__ = ["CATEGORIES", "NOVEL_THINGS", "WorldSpec", "instances_json", "write_world"]

THINGS = tuple(c["name"] for c in CATEGORIES if c["isthing"])
STUFF = tuple(c["name"] for c in CATEGORIES if not c["isthing"])
# Each thing comes in two paints of its own, as real objects have a typical look that a few
# patches show (a ball's shape alone spans several tokens); no paint is shared or close to a
# background's colours.
_PAINTS = {
    "ball": {"red": (210, 40, 40), "orange": (240, 140, 20)},
    "box": {"black": (25, 25, 25), "grey": (95, 95, 100)},
    "tent": {"yellow": (240, 220, 40), "lemon": (215, 230, 110)},
    "kite": {"pink": (240, 120, 180), "magenta": (200, 40, 160)},
    "ring": {"white": (245, 245, 245), "silver": (205, 205, 215)},
    "cross": {"purple": (130, 50, 170), "indigo": (75, 0, 130)},
}


@dataclass
class WorldSpec:
    seed: int = 0
    num_train: int = 1200
    num_val: int = 200
    size: tuple[int, int] = (112, 160)  # image side range
    stuff_caption_rate: float = 0.1  # how often a caption names a background


def _texture(name: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    noise = rng.normal(0, 1, (h, w)).astype(np.float32)
    if name == "sky":
        img = np.stack([100 + 60 * yy / h, 170 + 40 * yy / h, 240 - 10 * yy / h], -1)
        img += 4 * noise[..., None]
    elif name == "grass":
        stripes = np.sin(xx * 1.7 + rng.uniform(0, 6)) * 18
        img = (
            np.stack([40 + stripes * 0.3, 140 + stripes, 40 + stripes * 0.2], -1)
            + 12 * noise[..., None]
        )
    elif name == "water":
        waves = np.sin(yy * 0.9 + np.sin(xx * 0.15) * 2 + rng.uniform(0, 6)) * 25
        img = (
            np.stack([30 + waves * 0.4, 90 + waves * 0.6, 200 + waves * 0.3], -1)
            + 6 * noise[..., None]
        )
    elif name == "wall":
        row = (yy // 8).astype(int)
        mortar = ((yy % 8) < 1.5) | (((xx + (row % 2) * 8) % 16) < 1.5)
        img = np.where(mortar[..., None], np.float32([170, 170, 165]), np.float32([160, 65, 45]))
        img = img + 8 * noise[..., None]
    elif name == "sand":
        img = np.stack([225 + 0 * yy, 195 + 0 * yy, 140 + 0 * yy], -1) + 18 * noise[..., None]
    else:
        raise ValueError(name)
    return img


def _thing_mask(shape: str, h: int, w: int, box, rng) -> np.ndarray:
    x0, y0, x1, y1 = box
    canvas = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(canvas)
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    if shape == "ball":
        d.ellipse(box, fill=255)
    elif shape == "box":
        d.rectangle(box, fill=255)
    elif shape == "tent":
        d.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=255)
    elif shape == "kite":
        d.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=255)
    elif shape == "ring":
        d.ellipse(box, fill=255)
        t = r * 0.45
        d.ellipse((x0 + t, y0 + t, x1 - t, y1 - t), fill=0)
    elif shape == "cross":
        t = r * 0.35
        d.rectangle((cx - t, y0, cx + t, y1), fill=255)
        d.rectangle((x0, cy - t, x1, cy + t), fill=255)
    return np.asarray(canvas) > 0


def _scene(rng: np.random.Generator, spec: WorldSpec):
    h, w = (int(v) for v in rng.integers(spec.size[0], spec.size[1] + 1, size=2))
    ids = np.zeros((h, w), np.int64)
    image = np.zeros((h, w, 3), np.float32)
    segments, next_id = [], 1
    # two or three backgrounds, in horizontal bands (sky only at the top)
    n_bands = int(rng.integers(2, 4))
    cuts = np.sort(rng.choice(np.arange(h // 4, h - h // 4), size=n_bands - 1, replace=False))
    rows = np.split(np.arange(h), cuts)
    ground = [s for s in STUFF if s != "sky"]
    names = ["sky" if rng.random() < 0.5 else str(rng.choice(ground))]
    names += list(rng.choice([s for s in ground if s != names[0]], size=n_bands - 1, replace=False))
    for band, name in zip(rows, names, strict=True):
        ids[band] = next_id
        image[band] = _texture(name, h, w, rng)[band]
        segments.append((next_id, STUFF.index(name) + 101, 0))
        next_id += 1
    # one to three things
    things = []
    for _ in range(int(rng.integers(1, 4))):
        shape = str(rng.choice(THINGS))
        color = str(rng.choice(list(_PAINTS[shape])))
        s = int(rng.integers(min(h, w) // 3.5, min(h, w) // 1.8))  # 2 to 5 tokens across
        x0, y0 = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
        mask = _thing_mask(shape, h, w, (x0, y0, x0 + s, y0 + s), rng) & (ids > 0)
        if mask.sum() < 30:
            continue
        ids[mask] = next_id
        image[mask] = np.float32(_PAINTS[shape][color]) + rng.normal(0, 6, (int(mask.sum()), 3))
        segments.append((next_id, THINGS.index(shape) + 1, 0))
        things.append((color, shape))
        next_id += 1
    present = set(np.unique(ids).tolist())
    segments = [s for s in segments if s[0] in present]
    return np.clip(image, 0, 255).astype(np.uint8), ids, segments, things, names


def _caption(things, backgrounds, rng, rate: float) -> str:
    parts = [f"a {c} {s}" for c, s in things] or ["an empty scene"]
    text = " and ".join(parts)
    if rng.random() < rate:
        text += f" {rng.choice(['on the', 'by the', 'with the'])} {rng.choice(backgrounds)}"
    return text


def instances_json(
    images: list[dict],
    panoptic: list[dict],
    exclude: tuple[str, ...] = (),
    with_stuff: bool = False,
) -> dict:
    """COCO instances (detection) json from the world's panoptic annotations: boxes and areas of
    the thing segments (and of the stuff segments ``with_stuff``: the region boxes that refine the
    teacher), categories those classes; ``exclude``: names left out of the annotations (not of the
    categories)."""
    things = [c for c in CATEGORIES if c["isthing"] or with_stuff]
    keep = {c["id"] for c in things if c["name"] not in exclude}
    segments = [
        (ann["image_id"], seg)
        for ann in panoptic
        for seg in ann["segments_info"]
        if seg["category_id"] in keep
    ]
    anns = [
        {
            "id": i + 1,
            "image_id": image_id,
            "category_id": seg["category_id"],
            "bbox": seg["bbox"],
            "area": seg["area"],
            "iscrowd": seg["iscrowd"],
        }
        for i, (image_id, seg) in enumerate(segments)
    ]
    cats = [{"id": c["id"], "name": c["name"], "supercategory": "thing"} for c in things]
    return {"images": images, "annotations": anns, "categories": cats}


def write_world(root: str, spec: WorldSpec | None = None, progress: bool = True) -> dict:
    """Write the train and val splits under ``root``; returns the paths.

    Per split: ``{split}/*.jpg``, ``panoptic_{split}/*.png``, ``panoptic_{split}.json``,
    ``captions_{split}.csv``, ``instances_{split}.json`` (things' boxes, COCO detection format);
    for train also ``crops_train.csv``, ``instances_train_base.json`` (without the
    ``NOVEL_THINGS``' boxes) and ``regions_train.json`` (every segment's box)."""
    from tqdm import tqdm

    spec = spec or WorldSpec()
    rng = np.random.default_rng(spec.seed)
    paths = {}
    for split, num in (("train", spec.num_train), ("val", spec.num_val)):
        img_dir, pan_dir = os.path.join(root, split), os.path.join(root, f"panoptic_{split}")
        crop_dir = os.path.join(root, f"crops_{split}")
        os.makedirs(crop_dir, exist_ok=True)
        json_file = os.path.join(root, f"panoptic_{split}.json")
        captions, crops = [], []
        with PanopticWriter(json_file, pan_dir, CATEGORIES, img_dir, image_quality=92) as writer:
            for i in tqdm(range(num), desc=f"world {split}", disable=not progress):
                image, ids, segments, things, names = _scene(rng, spec)
                stem = f"{split}_{i:06d}"
                ann = writer.add(i + 1, stem, ids, segments, image)
                captions.append(
                    (
                        os.path.join(img_dir, stem + ".jpg"),
                        _caption(things, names, rng, spec.stuff_caption_rate),
                    )
                )
                if split == "train":
                    for k, rec in enumerate(ann["segments_info"]):
                        x, y, bw, bh = rec["bbox"]
                        name = next(c["name"] for c in CATEGORIES if c["id"] == rec["category_id"])
                        crop_path = os.path.join(crop_dir, f"{stem}_{k}.jpg")
                        Image.fromarray(image[y : y + bh, x : x + bw]).save(crop_path, quality=92)
                        crops.append((crop_path, f"a photo of a {name}."))
        images, annotations = writer.images, writer.annotations
        detection = {f"instances_{split}.json": ((), False)}
        if split == "train":
            detection["instances_train_base.json"] = (NOVEL_THINGS, False)
            detection["regions_train.json"] = ((), True)
        for name, (exclude, with_stuff) in detection.items():
            with open(os.path.join(root, name), "w") as f:
                json.dump(instances_json(images, annotations, exclude, with_stuff), f)
        for name, rows in (("captions", captions), ("crops", crops)):
            if rows:
                with open(os.path.join(root, f"{name}_{split}.csv"), "w", newline="") as f:
                    writer = csv.writer(f)
                    writer.writerow(["filepath", "title"])
                    writer.writerows(rows)
        paths[split] = {"images": img_dir, "panoptic": pan_dir, "json": json_file}
    return paths
