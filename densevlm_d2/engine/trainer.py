"""The detectron2 trainer of this project: DefaultTrainer with this project's evaluator, test loader
and checkpointer."""

from __future__ import annotations

import os

from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultTrainer

from ..data import build_region_test_loader
from ..evaluation import RegionAccuracyEvaluator

__all__ = ["Trainer"]


class Trainer(DefaultTrainer):
    @classmethod
    def build_evaluator(cls, cfg, dataset_name: str, output_folder: str | None = None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
        if evaluator_type == "region_accuracy":
            return RegionAccuracyEvaluator(dataset_name, output_folder)
        raise NotImplementedError(
            f"no evaluator for dataset {dataset_name!r} (evaluator_type={evaluator_type!r})"
        )

    @classmethod
    def build_test_loader(cls, cfg, dataset_name: str):
        return build_region_test_loader(cfg, dataset_name)
