"""Data loaders."""

from __future__ import annotations

import inspect

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.data.build import trivial_batch_collator
from detectron2.data.common import DatasetFromList, MapDataset
from detectron2.data.samplers import InferenceSampler

from .mappers import RegionEvalMapper, SemSegTestMapper

__all__ = ["build_region_test_loader", "build_sem_seg_test_loader"]

# detectron2 main's test loader takes a batch size; 0.6's loads one image at a time
_D2_TEST_LOADER_BATCHES = "batch_size" in inspect.signature(build_detection_test_loader).parameters


def build_region_test_loader(cfg, dataset_name: str, mapper=None) -> torch.utils.data.DataLoader:
    """Batched test loader for region classification (``TEST.REGIONS.IMS_PER_BATCH`` images per
    batch). detectron2's :class:`InferenceSampler` gives each process a contiguous shard, so every
    image is seen exactly once across processes.

    With detectron2 main this is ``build_detection_test_loader(..., batch_size=...)``; for 0.6 the
    same loader is built here (back-port: remove when 0.6 support ends)."""
    dicts = DatasetCatalog.get(dataset_name)
    mapper = mapper if mapper is not None else RegionEvalMapper(cfg, dataset_name)
    batch, workers = cfg.TEST.REGIONS.IMS_PER_BATCH, cfg.DATALOADER.NUM_WORKERS
    if _D2_TEST_LOADER_BATCHES:
        return build_detection_test_loader(
            dicts, mapper=mapper, batch_size=batch, num_workers=workers
        )
    dataset = MapDataset(DatasetFromList(dicts, copy=False), mapper)
    batch_sampler = torch.utils.data.BatchSampler(
        InferenceSampler(len(dataset)), batch, drop_last=False
    )
    return torch.utils.data.DataLoader(
        dataset,
        num_workers=workers,
        batch_sampler=batch_sampler,
        collate_fn=trivial_batch_collator,
    )


def build_sem_seg_test_loader(cfg, dataset_name: str, min_size: int = 0):
    """Semantic-segmentation test loader, one image per batch (images keep their own sizes):
    :class:`~densevlm_d2.data.mappers.SemSegTestMapper`, resizing the short side to ``min_size``
    (at most ``INPUT.MAX_SIZE_TEST``) when it is > 0."""
    evaluator = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    if evaluator != "sem_seg":
        raise ValueError(
            f"{dataset_name!r} is not a semantic-segmentation dataset (evaluator_type "
            f"{evaluator!r}); register one with densevlm_d2.data.datasets.register_sem_seg"
        )
    mapper = SemSegTestMapper(dataset_name, min_size=min_size, max_size=cfg.INPUT.MAX_SIZE_TEST)
    return build_detection_test_loader(
        DatasetCatalog.get(dataset_name), mapper=mapper, num_workers=cfg.DATALOADER.NUM_WORKERS
    )
