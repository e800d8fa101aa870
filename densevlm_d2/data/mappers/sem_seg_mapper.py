"""Dataset mapper for semantic-segmentation evaluation: the image, original or resized.

The training-free segmenter resizes the image itself (its protocol's resize, on its device); CAT-Seg
gets it resized by detectron2's ``ResizeShortestEdge`` first (``min_size``, as its published test
loader does). Either way the model predicts at the original size (``height``, ``width``) and the
evaluator reads the label file, so it is not loaded here.
"""

from __future__ import annotations

import numpy as np
import torch
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

__all__ = ["SemSegTestMapper"]


class SemSegTestMapper:
    """``{file_name, ...}`` -> the record with ``image`` ((3, H, W) uint8 RGB; with ``min_size``
    > 0 resized so its short side is ``min_size``, the long side at most ``max_size``),
    ``height`` and ``width`` (the original size) and ``dataset_name``."""

    def __init__(self, dataset_name: str = "", min_size: int = 0, max_size: int = 2560):
        self.dataset_name = dataset_name
        self.resize = T.ResizeShortestEdge(min_size, max_size) if min_size > 0 else None

    def __call__(self, record: dict) -> dict:
        image = utils.read_image(record["file_name"], format="RGB")
        height, width = image.shape[:2]
        if ("height" in record and record["height"] != height) or (
            "width" in record and record["width"] != width
        ):
            raise ValueError(
                f"{record['file_name']}: the image is {width}x{height}, its record says "
                f"{record.get('width')}x{record.get('height')}"
            )
        if self.resize is not None:
            image = T.apply_augmentations([self.resize], T.AugInput(image))[0].image
        out = dict(record)
        out.update(
            image=torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            height=height,
            width=width,
            dataset_name=self.dataset_name,
        )
        return out
