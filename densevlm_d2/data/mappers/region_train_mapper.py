"""Training inputs for region-language alignment: the image canvas and the regions a method needs.

Region sources (``mode``), as the published DenseVLM/CLIPSelf/RegionCLIP loaders build them:

* ``"grid"`` (image patches): one grid shape (rows, cols) is drawn per image from ``choices``; the
  cells tile the original image (not the padding); the cells are shuffled and at most ``max_boxes``
  kept (36 = all cells of the largest DenseVLM grid);
* ``"proposals"``: the image's boxes in random order, the first ``max_boxes`` (20) considered, those
  with area outside [min_size^2, max_size^2] skipped; if none is left, the top-left quarter of the
  image is used;
* ``"labeled"``: the first ``max_boxes`` boxes with their class labels, in the json's order
  (RegionCLIP's pseudo-labelled boxes).

The image is resized so its longest side is ``image_size`` (PIL bicubic) and zero padded right and
bottom, like the evaluation; boxes are returned in pixels of that canvas. Crops of the original
image (a grid cell enlarged by ``grid_crop_scale``, a box by ``box_crop_scale``, about its centre;
fitted into ``crop_size`` with centred padding, normalised) are built only when ``with_crops`` is
set, since only CLIPSelf uses them.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from detectron2.config import configurable
from PIL import Image

from ...clip.preprocess import crop_box, preprocess_crop, resize_longest

__all__ = ["RegionTrainMapper", "grid_boxes", "grid_choices"]


def grid_choices(max_split: int = 6, style: str = "densevlm") -> list[tuple[int, int]]:
    """Grid shapes (rows, cols): DenseVLM's 17 (rows 2..6, cols (rows+1)//2+1 .. min(2 rows, 6)) or
    CLIPSelf's 24 (rows 1..6, cols (rows+1)//2 .. min(2 rows, 6)) for ``max_split`` = 6."""
    if style == "densevlm":
        return [
            (m, n)
            for m in range(2, max_split + 1)
            for n in range((m + 1) // 2 + 1, min(2 * m, max_split) + 1)
        ]
    if style == "clipself":
        return [
            (m, n)
            for m in range(1, max_split + 1)
            for n in range((m + 1) // 2, min(2 * m, max_split) + 1)
        ]
    raise ValueError(f"grid style must be 'densevlm' or 'clipself', got {style!r}")


def grid_boxes(rows: int, cols: int, width: float, height: float) -> torch.Tensor:
    """(rows * cols, 4) xyxy cells tiling a ``width`` x ``height`` image, row by row."""
    xs = torch.linspace(0, 1, cols + 1)
    ys = torch.linspace(0, 1, rows + 1)
    x0, y0 = torch.meshgrid(xs[:-1], ys[:-1], indexing="xy")
    x1, y1 = torch.meshgrid(xs[1:], ys[1:], indexing="xy")
    normed = torch.stack([x0, y0, x1, y1], dim=-1).reshape(-1, 4)
    return normed * torch.tensor([width, height, width, height])


class RegionTrainMapper:
    @configurable
    def __init__(
        self,
        *,
        image_size: int,
        mode: str = "grid",
        choices=None,
        max_boxes: int = 36,
        min_size: float = 8,
        max_size: float = 1024,
        with_crops: bool = False,
        grid_crop_scale: float = 1.0,
        box_crop_scale: float = 1.5,
        crop_size: int = 224,
    ):
        if mode not in ("grid", "proposals", "labeled"):
            raise ValueError(f"region mode must be grid, proposals or labeled, got {mode!r}")
        self.image_size = image_size
        self.mode = mode
        self.choices = [tuple(c) for c in (choices or grid_choices())]
        self.max_boxes = max_boxes
        self.min_area, self.max_area = min_size**2, max_size**2
        self.with_crops = with_crops
        self.grid_crop_scale, self.box_crop_scale = grid_crop_scale, box_crop_scale
        self.crop_size = crop_size

    @classmethod
    def from_config(cls, cfg, with_crops: bool = False):
        r = cfg.INPUT.REGIONS
        return {
            "image_size": r.IMAGE_SIZE,
            "mode": r.MODE,
            "choices": grid_choices(r.MAX_SPLIT, r.GRID_STYLE),
            "max_boxes": r.MAX_BOXES,
            "min_size": r.MIN_SIZE,
            "max_size": r.MAX_SIZE,
            "with_crops": with_crops,
            "grid_crop_scale": r.GRID_CROP_SCALE,
            "box_crop_scale": r.BOX_CROP_SCALE,
            "crop_size": r.CROP_SIZE,
        }

    def _regions(self, d: dict, width: int, height: int):
        """(boxes in original pixels, crop boxes, labels or None)."""
        if self.mode == "grid":
            rows, cols = random.choice(self.choices)
            cells = grid_boxes(rows, cols, width, height)
            order = list(range(len(cells)))
            random.shuffle(order)
            boxes = cells[order[: self.max_boxes]]
            crops = [crop_box(b, (width, height), self.grid_crop_scale) for b in boxes.tolist()]
            return boxes, crops, None
        anns = d.get("annotations", [])
        if self.mode == "labeled":
            anns = anns[: self.max_boxes]
            boxes = torch.tensor(
                [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)],
                dtype=torch.float32,
            ).reshape(-1, 4)
            labels = torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)
            crops = [crop_box(b, (width, height), self.box_crop_scale) for b in boxes.tolist()]
            return boxes, crops, labels
        order = list(range(len(anns)))
        random.shuffle(order)
        boxes, crops = [], []
        for i in order[: self.max_boxes]:
            x, y, w, h = anns[i]["bbox"]
            if not self.min_area <= w * h <= self.max_area:
                continue
            boxes.append([x, y, x + w, y + h])
            crops.append(crop_box(boxes[-1], (width, height), self.box_crop_scale))
        if not boxes:  # as published: never an image without regions
            boxes = [[0.0, 0.0, width / 4, height / 4]]
            crops = [(0.0, 0.0, float(width // 4), float(height // 4))]
        return torch.tensor(boxes, dtype=torch.float32), crops, None

    def __call__(self, dataset_dict: dict) -> dict:
        with Image.open(dataset_dict["file_name"]) as img:
            image = img.convert("RGB")
        canvas, scale = resize_longest(image, self.image_size)
        boxes, crops, labels = self._regions(dataset_dict, image.width, image.height)
        out = {
            "image": torch.from_numpy(np.array(canvas, dtype=np.uint8)).permute(2, 0, 1),
            "image_id": dataset_dict.get("image_id"),
            "file_name": dataset_dict["file_name"],
            "boxes": boxes * scale,
        }
        if labels is not None:
            out["labels"] = labels
        if self.with_crops:
            out["crops"] = torch.stack([preprocess_crop(image, c, self.crop_size) for c in crops])
        return out
