"""Dataset registration (importing this module registers the built-in datasets)."""

from . import builtin  # noqa: F401
from .panoptic import DatasetLayoutError, load_panoptic_json, panoptic_metadata, register_panoptic

__all__ = ["DatasetLayoutError", "load_panoptic_json", "panoptic_metadata", "register_panoptic"]
