"""Dataset registration (importing this module registers the built-in datasets)."""

from . import builtin  # noqa: F401
from .panoptic import (
    DatasetFormatError,
    DatasetLayoutError,
    load_panoptic_json,
    panoptic_metadata,
    register_panoptic,
)

__all__ = [
    "DatasetFormatError",
    "DatasetLayoutError",
    "load_panoptic_json",
    "panoptic_metadata",
    "register_panoptic",
]
