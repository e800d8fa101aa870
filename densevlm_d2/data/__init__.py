"""Datasets, mappers and loaders."""

from . import datasets  # noqa: F401  (registers the built-in datasets)
from .build import build_region_test_loader
from .mappers import RegionEvalMapper

__all__ = ["RegionEvalMapper", "build_region_test_loader"]
