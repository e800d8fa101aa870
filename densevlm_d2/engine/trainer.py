"""The detectron2 trainer of this project: DefaultTrainer with this project's evaluators,
optimiser, schedule, AMP step (with gradient accumulation), checkpointer, weight blending and
export. The data of each model
comes from the model itself (:func:`~densevlm_d2.modeling.data_contract`)."""

from __future__ import annotations

import contextlib
import logging
import os
import weakref

import torch
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultTrainer, TrainerBase, create_ddp_model
from detectron2.evaluation import COCOEvaluator
from detectron2.solver import build_lr_scheduler as build_d2_lr_scheduler
from detectron2.solver.lr_scheduler import LRMultiplier
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, TensorboardXWriter

from ..data.datasets.panoptic import DatasetLayoutError
from ..evaluation import (
    OVCOCOEvaluator,
    OVLVISEvaluator,
    RegionAccuracyEvaluator,
    SemSegMetricsEvaluator,
)
from ..modeling import data_contract, get_clip_backbone
from ..modeling.meta_arch import set_detector_vocabulary
from .accumulation import micro_batch_config
from .amp_step import AMPTrainStep
from .checkpointer import CLIPCheckpointer
from .curves import PlotCurves
from .hooks import ExportCLIP, LazyJSONWriter
from .optim import WarmupCosine, add_gradient_clipping, build_adamw

__all__ = ["Trainer"]

_PRECISIONS = {"float16": torch.float16, "bfloat16": torch.bfloat16}


class Trainer(DefaultTrainer):
    def __init__(self, cfg):
        # DefaultTrainer.__init__, except that the model is wrapped for CPU processes too (0.6 and
        # main pass the local rank as a GPU id) and the step is AMPTrainStep.
        TrainerBase.__init__(self)
        logger = logging.getLogger("densevlm_d2")
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        # the data first: a missing dataset is found before minutes of model building and text
        # embedding (the tools check the weights and the evaluation data before that)
        data_loader = self.build_train_loader(cfg)
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        on_gpu = next(model.parameters()).device.type == "cuda"
        model = create_ddp_model(
            model, device_ids=[comm.get_local_rank()] if on_gpu else None, broadcast_buffers=False
        )
        if cfg.SOLVER.AMP.PRECISION not in _PRECISIONS:
            raise ValueError(f"SOLVER.AMP.PRECISION must be one of {list(_PRECISIONS)}")
        self._trainer = AMPTrainStep(
            model,
            data_loader,
            optimizer,
            cfg.SOLVER.AMP.ENABLED,
            _PRECISIONS[cfg.SOLVER.AMP.PRECISION],
            cfg.SOLVER.ACCUMULATION_STEPS,
        )
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = CLIPCheckpointer(
            model,
            cfg.OUTPUT_DIR,
            allow_random_clip=cfg.MODEL.CLIP.RANDOM_INIT,
            trainer=weakref.proxy(self),
        )
        self._trainer.checkpointer = self.checkpointer
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())
        logger.info(
            "training %s for %d iterations, %d images per iteration over %d processes "
            "(%d micro-batches each)",
            cfg.MODEL.META_ARCHITECTURE,
            self.max_iter,
            cfg.SOLVER.IMS_PER_BATCH,
            comm.get_world_size(),
            cfg.SOLVER.ACCUMULATION_STEPS,
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

    def build_writers(self):
        """detectron2's default writers, with ``metrics.json`` created on the first metrics (a run
        killed before them leaves no empty file)."""
        out = self.cfg.OUTPUT_DIR
        return [
            CommonMetricPrinter(self.max_iter),
            LazyJSONWriter(os.path.join(out, "metrics.json")),
            TensorboardXWriter(out),
        ]

    def build_hooks(self):
        hooks = super().build_hooks()
        if self.cfg.SOLVER.EXPORT_CLIP:
            hooks.append(ExportCLIP(self.cfg.OUTPUT_DIR, self.cfg.SOLVER.WEIGHT_BLEND_ALPHA))
        if self.cfg.SOLVER.PLOT_CURVES:  # after the writers: metrics.json holds the last iteration
            hooks.append(PlotCurves(self.cfg.OUTPUT_DIR, self.cfg.SOLVER.CHECKPOINT_PERIOD))
        return hooks

    @classmethod
    def build_model(cls, cfg):
        """detectron2's ``build_model``; a detector's text classifier gets
        ``MODEL.TEXT_CLASSIFIER.CLASS_NAMES``, else the vocabulary of its first training (else
        test) dataset. A dataset whose classes are only known from its files, which are not on
        disk, leaves the detector without a vocabulary (a model built for inference on another
        machine): :func:`densevlm_d2.set_vocabulary` gives it one, and evaluation gives it each
        test dataset's (training loads its data before the model, so it always has one)."""
        model = super().build_model(cfg)
        try:
            set_detector_vocabulary(cfg, model)
        except DatasetLayoutError as e:
            logging.getLogger("densevlm_d2").info(
                "the detector has no vocabulary yet (%s); set one with "
                "densevlm_d2.set_vocabulary(model, names) or MODEL.TEXT_CLASSIFIER.CLASS_NAMES",
                str(e).splitlines()[0],
            )
        return model

    @classmethod
    def build_optimizer(cls, cfg, model):
        s = cfg.SOLVER
        student = get_clip_backbone(model).model  # the open_clip model
        optimizer = build_adamw(
            model,
            s.BASE_LR,
            s.WEIGHT_DECAY,
            s.ADAMW_BETAS,
            s.ADAMW_EPS,
            lr_multipliers={id(p): s.CLIP_LR_MULTIPLIER for p in student.parameters()},
        )
        # SOLVER.CLIP_GRADIENTS (off by default): clips before each step (after AMP unscaling);
        # CLIP_TYPE "full_model" clips the norm of all gradients together (CAT-Seg)
        return add_gradient_clipping(cfg, optimizer)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        s = cfg.SOLVER
        if s.LR_SCHEDULER_NAME == "WarmupCosine":
            return LRMultiplier(optimizer, WarmupCosine(s.WARMUP_ITERS, s.MAX_ITER), s.MAX_ITER)
        return build_d2_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg):
        """The model's own training data (:class:`~densevlm_d2.modeling.DataContract`), in
        micro-batches of ``SOLVER.IMS_PER_BATCH / SOLVER.ACCUMULATION_STEPS`` images over all
        processes (the one place where every model's loader gets its batch size)."""
        return data_contract(cfg).build_train_loader(micro_batch_config(cfg, comm.get_world_size()))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name: str, output_folder: str | None = None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
        if evaluator_type == "region_accuracy":
            return RegionAccuracyEvaluator(dataset_name, output_folder)
        if evaluator_type == "ov_coco":
            return OVCOCOEvaluator(dataset_name, output_dir=output_folder)
        if evaluator_type == "ov_lvis":
            return OVLVISEvaluator(
                dataset_name, output_folder, max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE
            )
        if evaluator_type == "coco":
            return COCOEvaluator(dataset_name, output_dir=output_folder, use_fast_impl=False)
        if evaluator_type == "sem_seg":
            return SemSegMetricsEvaluator(
                dataset_name, output_folder, save_predictions=cfg.TEST.SAVE_SEM_SEG_PREDICTIONS
            )
        raise NotImplementedError(
            f"no evaluator for dataset {dataset_name!r} (evaluator_type={evaluator_type!r})"
        )

    @classmethod
    def build_test_loader(cls, cfg, dataset_name: str):
        """The model's own test data (:class:`~densevlm_d2.modeling.DataContract`)."""
        return data_contract(cfg).build_test_loader(cfg, dataset_name)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """Evaluate with the blended weights (``SOLVER.WEIGHT_BLEND_ALPHA``), as published, on each
        test dataset in turn, after the model's contract has prepared it for that dataset (an
        open-vocabulary detector gets the dataset's classes)."""
        inner = (
            model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
        )
        alpha = cfg.SOLVER.WEIGHT_BLEND_ALPHA
        blend = get_clip_backbone(inner).blended(alpha) if alpha < 1.0 else contextlib.nullcontext()
        contract = data_contract(cfg)
        with blend:
            if evaluators is not None:
                return super().test(cfg, model, evaluators)
            results = {}
            for name in cfg.DATASETS.TEST:
                contract.before_evaluation(cfg, inner, name)
                one = cfg.clone()
                one.defrost()
                one.DATASETS.TEST = (name,)
                results[name] = super().test(one, model)
            # as DefaultTrainer.test: a single dataset's results unwrapped
            return next(iter(results.values())) if len(results) == 1 else results
