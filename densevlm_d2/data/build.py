"""Data loaders."""

from __future__ import annotations

import torch
from detectron2.data import DatasetCatalog
from detectron2.data.build import trivial_batch_collator
from detectron2.data.common import DatasetFromList, MapDataset
from detectron2.data.samplers import InferenceSampler

from .mappers import RegionEvalMapper

__all__ = ["build_region_test_loader"]


def build_region_test_loader(cfg, dataset_name: str, mapper=None) -> torch.utils.data.DataLoader:
    """Batched test loader for region classification (``TEST.REGIONS.IMS_PER_BATCH`` images per
    batch). detectron2's :class:`InferenceSampler` gives each process a contiguous shard, so every
    image is seen exactly once across processes."""
    dataset = DatasetFromList(DatasetCatalog.get(dataset_name), copy=False)
    mapper = mapper if mapper is not None else RegionEvalMapper(cfg, dataset_name)
    dataset = MapDataset(dataset, mapper)
    sampler = InferenceSampler(len(dataset))
    batch_sampler = torch.utils.data.BatchSampler(
        sampler, cfg.TEST.REGIONS.IMS_PER_BATCH, drop_last=False
    )
    return torch.utils.data.DataLoader(
        dataset,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        batch_sampler=batch_sampler,
        collate_fn=trivial_batch_collator,
    )
