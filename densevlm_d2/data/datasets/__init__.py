"""Dataset registration (importing this module registers the built-in datasets); the register_*
functions also register your own (docs/own_data.md)."""

from ..vocabulary import register_vocabulary
from . import builtin  # noqa: F401
from .coco_boxes import register_coco_boxes, register_image_folder
from .panoptic import (
    DatasetFormatError,
    DatasetLayoutError,
    load_panoptic_json,
    panoptic_metadata,
    register_panoptic,
)
from .sem_seg import SEM_SEG_BENCHMARKS, register_sem_seg

__all__ = [
    "SEM_SEG_BENCHMARKS",
    "DatasetFormatError",
    "DatasetLayoutError",
    "load_panoptic_json",
    "panoptic_metadata",
    "register_coco_boxes",
    "register_image_folder",
    "register_panoptic",
    "register_sem_seg",
    "register_vocabulary",
]
