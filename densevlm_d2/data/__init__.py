"""Datasets, their vocabularies, mappers and loaders."""

from . import datasets  # noqa: F401  (registers the built-in datasets)
from .build import build_region_test_loader, build_sem_seg_test_loader
from .mappers import RegionEvalMapper
from .vocabulary import (
    VOCABULARY_DIR,
    dataset_vocabulary,
    register_vocabulary,
    shipped_vocabulary,
    training_vocabulary,
)

__all__ = [
    "VOCABULARY_DIR",
    "RegionEvalMapper",
    "build_region_test_loader",
    "build_sem_seg_test_loader",
    "dataset_vocabulary",
    "register_vocabulary",
    "shipped_vocabulary",
    "training_vocabulary",
]
