"""Dataset mapper for region classification: one panoptic image -> the published evaluation inputs.

Per image (docs/published_code.md, "Region-classification evaluation"): the image is resized so
its longest side is ``image_size`` (PIL bicubic) and zero padded right/bottom, returned as a uint8
(3, S, S) canvas that the model normalises (padding becomes ``(0 - mean) / std``, as published).
For each of the first ``max_regions`` segments, in the json's order, crowd segments included:

* box: a thing's annotation ``bbox``; a stuff segment's tight mask box ``(x_min, y_min, x_max,
  y_max)`` in pixel indices (the published ``mask2box``, whose far edge is the last pixel's index);
* skipped (still counted towards ``max_regions``) when the box area is below ``min_size ** 2`` or
  above ``max_size ** 2`` original pixels;
* mask: the segment resized like the image onto the token grid (non-antialiased bicubic, ``> 0``);
* crop (only when asked for): a thing's box enlarged 1.5x about its centre, a stuff segment's tight
  box, cut from the original image and fitted into 224 x 224 with centred zero padding.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from detectron2.config import configurable

from ...clip.models import patch_size_of
from ...clip.preprocess import crop_box, preprocess_crop, preprocess_masks, resize_longest
from ..datasets.panoptic import read_panoptic_pair

__all__ = ["REGION_TYPES", "RegionEvalMapper"]

# rois: 1x1 RoIAlign of the box on the dense map; maskpool: mean of the tokens in the mask;
# crops: CLS embedding of the region crop (slow: one forward per region).
REGION_TYPES = ("rois", "maskpool", "crops")


class RegionEvalMapper:
    @configurable
    def __init__(
        self,
        *,
        image_size: int,
        patch_size: int,
        region_types=("rois", "maskpool"),
        max_regions: int = 100,
        min_size: float = 8,
        max_size: float = 1024,
        thing_crop_scale: float = 1.5,
        crop_size: int = 224,
        dataset_name: str = "",
    ):
        unknown = set(region_types) - set(REGION_TYPES)
        if unknown or not region_types:
            raise ValueError(f"region types must be among {REGION_TYPES}, got {list(region_types)}")
        self.image_size = image_size
        self.grid = image_size // patch_size
        self.region_types = tuple(region_types)
        self.max_regions = max_regions
        self.min_area, self.max_area = min_size**2, max_size**2
        self.thing_crop_scale = thing_crop_scale
        self.crop_size = crop_size
        self.dataset_name = dataset_name

    @classmethod
    def from_config(cls, cfg, dataset_name: str = ""):
        r = cfg.TEST.REGIONS
        return {
            "image_size": cfg.INPUT.REGIONS.IMAGE_SIZE,
            "patch_size": patch_size_of(cfg.MODEL.CLIP.MODEL_NAME),
            "region_types": list(r.TYPES),
            "max_regions": r.MAX_PER_IMAGE,
            "min_size": r.MIN_SIZE,
            "max_size": r.MAX_SIZE,
            "thing_crop_scale": r.THING_CROP_SCALE,
            "crop_size": r.CROP_SIZE,
            "dataset_name": dataset_name,
        }

    def __call__(self, dataset_dict: dict) -> dict:
        d = copy.deepcopy(dataset_dict)
        image, pan, empty = read_panoptic_pair(d)
        canvas, scale = resize_longest(image, self.image_size)

        boxes, crop_boxes, masks, classes, is_thing, seg_ids = [], [], [], [], [], []
        skipped_empty = 0
        for seg in d["segments_info"][: self.max_regions]:
            if seg["id"] in empty:  # a stuff segment painted over by things: skipped and counted
                skipped_empty += 1
                continue
            mask = pan == seg["id"]
            if seg["isthing"]:
                x, y, w, h = (float(v) for v in seg["bbox"])
                box = (x, y, x + w, y + h)
                crop = crop_box(box, image.size, self.thing_crop_scale)
            else:
                ys, xs = np.nonzero(mask)
                box = crop = (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))
                w, h = box[2] - box[0], box[3] - box[1]
            if not self.min_area <= w * h <= self.max_area:
                continue
            boxes.append(box)
            crop_boxes.append(crop)
            masks.append(mask)
            classes.append(seg["category_id"])
            is_thing.append(bool(seg["isthing"]))
            seg_ids.append(seg["id"])

        regions = {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4) * scale,
            "classes": torch.tensor(classes, dtype=torch.int64),
            "is_thing": torch.tensor(is_thing, dtype=torch.bool),
            "segment_ids": torch.tensor(seg_ids, dtype=torch.int64),
            "empty_segments_skipped": skipped_empty,
        }
        if "maskpool" in self.region_types:
            regions["masks"] = (
                preprocess_masks(np.stack(masks), self.grid)
                if masks
                else torch.zeros(0, self.grid, self.grid, dtype=torch.bool)
            )
        if "crops" in self.region_types:
            regions["crops"] = (
                torch.stack([preprocess_crop(image, b, self.crop_size) for b in crop_boxes])
                if crop_boxes
                else torch.zeros(0, 3, self.crop_size, self.crop_size)
            )
        return {
            "image": torch.from_numpy(np.array(canvas, dtype=np.uint8)).permute(2, 0, 1),
            "file_name": d["file_name"],
            "image_id": d["image_id"],
            "height": image.height,
            "width": image.width,
            "scale": scale,
            "dataset_name": self.dataset_name,
            "regions": regions,
        }
