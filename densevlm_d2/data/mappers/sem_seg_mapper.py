"""Dataset mapper for training-free semantic-segmentation evaluation: the original image only.

The model resizes the image itself (its protocol's resize, on its device) and predicts at the
original size; the evaluator reads the label file, so it is not loaded here.
"""

from __future__ import annotations

import numpy as np
import torch
from detectron2.data import detection_utils as utils

__all__ = ["SemSegTestMapper"]


class SemSegTestMapper:
    """``{file_name, ...}`` -> the record with ``image`` ((3, H, W) uint8 RGB), ``height``,
    ``width`` and ``dataset_name``."""

    def __init__(self, dataset_name: str = ""):
        self.dataset_name = dataset_name

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
        out = dict(record)
        out.update(
            image=torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            height=height,
            width=width,
            dataset_name=self.dataset_name,
        )
        return out
