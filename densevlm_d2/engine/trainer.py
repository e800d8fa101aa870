"""The detectron2 trainer of this project: DefaultTrainer with this project's data, evaluator,
optimiser, schedule, AMP step, checkpointer, weight blending and export."""

from __future__ import annotations

import contextlib
import logging
import os
import weakref

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_train_loader
from detectron2.engine import DefaultTrainer, TrainerBase
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.solver.lr_scheduler import LRMultiplier
from detectron2.utils import comm
from torch.nn.parallel import DistributedDataParallel

from ..data import build_region_test_loader
from ..data.mappers import RegionTrainMapper
from ..evaluation import RegionAccuracyEvaluator
from .blend import blended_student
from .checkpointer import CLIPCheckpointer
from .hooks import ExportCLIP
from .optim import WarmupCosine, build_adamw
from .train_step import RegionTrainStep

__all__ = ["Trainer", "create_ddp_model"]

_PRECISIONS = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def create_ddp_model(model: torch.nn.Module) -> torch.nn.Module:
    """DistributedDataParallel over all processes, on GPUs or on the CPU (gloo)."""
    if comm.get_world_size() == 1:
        return model
    device = next(model.parameters()).device
    device_ids = [comm.get_local_rank()] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)


class Trainer(DefaultTrainer):
    def __init__(self, cfg):
        # DefaultTrainer.__init__ wraps the model for GPUs only; the rest is the same.
        TrainerBase.__init__(self)
        logger = logging.getLogger("densevlm_d2")
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model)
        if cfg.SOLVER.AMP.PRECISION not in _PRECISIONS:
            raise ValueError(f"SOLVER.AMP.PRECISION must be one of {list(_PRECISIONS)}")
        self._trainer = RegionTrainStep(
            model,
            data_loader,
            optimizer,
            cfg.SOLVER.AMP.ENABLED,
            _PRECISIONS[cfg.SOLVER.AMP.PRECISION],
        )
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = CLIPCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())
        logger.info(
            "training %s for %d iterations, %d images per iteration over %d processes",
            cfg.MODEL.META_ARCHITECTURE,
            self.max_iter,
            cfg.SOLVER.IMS_PER_BATCH,
            comm.get_world_size(),
        )

    # detectron2 0.6's DefaultTrainer saves only the iteration and the hooks' states; the optimiser
    # state (and the AMP scaler's) must be saved too for a resumed run to continue exactly (main
    # does).
    def state_dict(self):
        ret = super().state_dict()
        ret["_trainer"] = self._trainer.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._trainer.load_state_dict(state_dict["_trainer"])

    def build_hooks(self):
        hooks = super().build_hooks()
        if self.cfg.SOLVER.EXPORT_CLIP:
            hooks.append(ExportCLIP(self.cfg.OUTPUT_DIR, self.cfg.SOLVER.WEIGHT_BLEND_ALPHA))
        return hooks

    @classmethod
    def build_optimizer(cls, cfg, model):
        s = cfg.SOLVER
        return build_adamw(model, s.BASE_LR, s.WEIGHT_DECAY, s.ADAMW_BETAS, s.ADAMW_EPS)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        s = cfg.SOLVER
        return LRMultiplier(optimizer, WarmupCosine(s.WARMUP_ITERS, s.MAX_ITER), s.MAX_ITER)

    @classmethod
    def build_train_loader(cls, cfg):
        arch = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
        mapper = RegionTrainMapper(cfg, with_crops=getattr(arch, "needs_crops", False))
        dicts = [d for name in cfg.DATASETS.TRAIN for d in DatasetCatalog.get(name)]
        if not dicts:
            raise ValueError(f"no training images in {cfg.DATASETS.TRAIN}")
        return build_detection_train_loader(
            dicts,
            mapper=mapper,
            total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
            aspect_ratio_grouping=False,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )

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

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """Evaluate with the blended weights (``SOLVER.WEIGHT_BLEND_ALPHA``), as published."""
        inner = getattr(model, "module", model)
        alpha = cfg.SOLVER.WEIGHT_BLEND_ALPHA
        blend = blended_student(inner, alpha) if alpha < 1.0 else contextlib.nullcontext()
        with blend:
            return super().test(cfg, model, evaluators)
