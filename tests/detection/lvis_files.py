"""Small files in the exact LVIS v1 format, written by the OV-LVIS tests: the real 1,203 categories
(with ``synonyms``, frequency tags ``r/c/f``, ``image_count`` / ``instance_count``), images named by
``coco_url`` in ``coco/train2017`` and ``coco/val2017``, polygon and RLE masks (compressed and not),
``not_exhaustive_category_ids`` and ``neg_category_ids``."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_util

from densevlm_d2.data.datasets.ov_lvis import lvis_v1_categories

# the world's things as LVIS classes: (category id, name, frequency, colour, shape)
THINGS = (
    (3, "airplane", "f", (220, 40, 40), "box"),
    (1, "aerosol_can", "c", (40, 200, 40), "ellipse"),
    (21, "armor", "r", (40, 60, 230), "box"),  # rare: novel (synonyms armor, armour)
    (12, "apple", "f", (230, 210, 30), "ellipse"),
)
SIZE = (160, 120)  # width, height


def categories_with_counts(annotations: list[dict]) -> list[dict]:
    cats = lvis_v1_categories()
    images = {}
    for a in annotations:
        images.setdefault(a["category_id"], set()).add(a["image_id"])
    instances = Counter(a["category_id"] for a in annotations)
    for c in cats:
        c["image_count"] = len(images.get(c["id"], ()))
        c["instance_count"] = instances.get(c["id"], 0)
    return cats


def _shape_mask(shape: str, box: list[float]) -> np.ndarray:
    w, h = SIZE
    img = Image.new("L", (w, h), 0)
    x0, y0, bw, bh = box
    draw = ImageDraw.Draw(img)
    if shape == "ellipse":
        draw.ellipse([x0, y0, x0 + bw - 1, y0 + bh - 1], fill=1)
    else:
        draw.rectangle([x0, y0, x0 + bw - 1, y0 + bh - 1], fill=1)
    return np.asarray(img, dtype=np.uint8)


def make_split(
    root: Path, split: str, num_images: int, seed: int, start_id: int, uncompressed: bool = False
) -> dict:
    """One LVIS json's images, annotations and categories; the JPEGs go to coco/<folder>/ (val
    images alternate between train2017 and val2017, as LVIS val's do)."""
    rng = np.random.default_rng(seed)
    w, h = SIZE
    images, annotations = [], []
    for k in range(num_images):
        image_id = start_id + k
        folder = "train2017" if split == "train" or k % 2 else "val2017"
        name = f"{image_id:012d}.jpg"
        pixels = rng.integers(90, 140, (h, w, 3), dtype=np.uint8)
        canvas = Image.fromarray(pixels)
        draw = ImageDraw.Draw(canvas)
        things = [THINGS[(k + j) % len(THINGS)] for j in range(3)]
        for j, (cat_id, _, _, colour, shape) in enumerate(things):
            bw, bh = int(rng.integers(28, 48)), int(rng.integers(24, 40))
            x0 = 4 + j * 52 + int(rng.integers(0, 4))
            y0 = int(rng.integers(4, h - bh - 4))
            box = [float(x0), float(y0), float(bw), float(bh)]
            if shape == "ellipse" and k % 2 == 0:  # an RLE mask on every other image
                draw.ellipse([x0, y0, x0 + bw - 1, y0 + bh - 1], fill=colour)
                rle = mask_util.encode(np.asfortranarray(_shape_mask(shape, box)))
                if uncompressed:  # LVIS's other RLE form: counts as a list of run lengths
                    m = _shape_mask(shape, box).flatten(order="F")
                    change = np.flatnonzero(np.diff(np.concatenate([[0], m, [2]])))
                    counts = np.diff(np.concatenate([[0], change])).tolist()
                    segm = {"size": [h, w], "counts": counts}
                else:
                    segm = {"size": [h, w], "counts": rle["counts"].decode()}
                area = float(mask_util.area(rle))
            elif shape == "ellipse":  # the ellipse as a 16-point polygon
                t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
                cx, cy = x0 + bw / 2, y0 + bh / 2
                pts = np.stack([cx + bw / 2 * np.cos(t), cy + bh / 2 * np.sin(t)], 1)
                draw.polygon([tuple(p) for p in pts.tolist()], fill=colour)
                segm = [pts.round(2).flatten().tolist()]
                area = float(mask_util.area(mask_util.merge(mask_util.frPyObjects(segm, h, w))))
            else:
                draw.rectangle([x0, y0, x0 + bw - 1, y0 + bh - 1], fill=colour)
                x1, y1 = x0 + bw, y0 + bh
                segm = [[x0, y0, x1, y0, x1, y1, x0, y1]]
                area = float(bw * bh)
            annotations.append(
                {"id": len(annotations) + start_id * 10, "image_id": image_id,
                 "category_id": cat_id, "bbox": box, "area": area, "segmentation": segm}
            )  # fmt: skip
        out = root / "coco" / folder
        out.mkdir(parents=True, exist_ok=True)
        canvas.save(out / name, quality=95)
        present = sorted({t[0] for t in things})
        images.append(
            {"id": image_id, "width": w, "height": h, "license": 1,
             "coco_url": f"http://images.cocodataset.org/{folder}/{name}",
             "flickr_url": f"http://farm.example.org/{name}", "date_captured": "2013-11-14",
             "not_exhaustive_category_ids": present[:1],
             "neg_category_ids": [c for c in (2, 30) if c not in present]}
        )  # fmt: skip
    return {
        "info": {"description": "test LVIS v1"},
        "licenses": [{"id": 1, "name": "test", "url": ""}],
        "images": images,
        "annotations": annotations,
        "categories": categories_with_counts(annotations),
    }


def write_lvis_layout(root: Path, num_train: int = 4, num_val: int = 4, seed: int = 0) -> Path:
    """``root/lvis/lvis_v1_{train,val}.json`` (official form: the train file still holds the rare
    class's annotations) and the images under ``root/coco/``. Returns ``root``."""
    lvis = root / "lvis"
    lvis.mkdir(parents=True, exist_ok=True)
    train = make_split(root, "train", num_train, seed, start_id=1)
    val = make_split(root, "val", num_val, seed + 1, start_id=1000, uncompressed=True)
    (lvis / "lvis_v1_train.json").write_text(json.dumps(train))
    (lvis / "lvis_v1_val.json").write_text(json.dumps(val))
    return root
