"""The detectron2 trainer of this project: DefaultTrainer with this project's data, evaluator,
optimiser, schedule, AMP step, checkpointer, weight blending and export."""

from __future__ import annotations

import contextlib
import logging
import os
import weakref

import torch
from detectron2.data import (
    DatasetCatalog,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.engine import DefaultTrainer, TrainerBase, create_ddp_model
from detectron2.evaluation import COCOEvaluator
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN, ProposalNetwork
from detectron2.solver import build_lr_scheduler as build_d2_lr_scheduler
from detectron2.solver.lr_scheduler import LRMultiplier
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, TensorboardXWriter

from ..data import build_region_test_loader
from ..data.mappers import (
    RegionTrainMapper,
    SemSegTestMapper,
    SemSegTrainMapper,
    build_detection_mapper,
)
from ..evaluation import OVCOCOEvaluator, RegionAccuracyEvaluator, SemSegMetricsEvaluator
from ..modeling import (
    CATSeg,
    OpenVocabROIHeads,
    RegionAlignmentModel,
    get_clip_backbone,
    set_vocabulary,
)
from .checkpointer import CLIPCheckpointer
from .hooks import ExportCLIP, LazyJSONWriter
from .optim import WarmupCosine, add_gradient_clipping, build_adamw
from .train_step import RegionTrainStep

__all__ = ["Trainer", "is_detector", "set_dataset_vocabulary"]

_PRECISIONS = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def _arch_is(cfg, kinds) -> bool:
    """Whether ``MODEL.META_ARCHITECTURE`` is a class and a subclass of ``kinds``."""
    arch = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
    return isinstance(arch, type) and issubclass(arch, kinds)


def is_detector(cfg) -> bool:
    """Whether ``MODEL.META_ARCHITECTURE`` is a detectron2 R-CNN (detection data and evaluators)."""
    return _arch_is(cfg, GeneralizedRCNN | ProposalNetwork)


def set_dataset_vocabulary(cfg, model: torch.nn.Module, dataset_name: str | None = None) -> None:
    """Give the model's text classifiers ``MODEL.TEXT_CLASSIFIER.CLASS_NAMES`` or the
    ``thing_classes`` of ``dataset_name`` (default: the first training dataset, else the first test
    dataset), with the novel classes of the config or the dataset's metadata."""
    if not any(isinstance(m, OpenVocabROIHeads) for m in model.modules()):
        return
    c = cfg.MODEL.TEXT_CLASSIFIER
    names = list(c.CLASS_NAMES)
    novel = list(c.NOVEL_CLASSES)
    if dataset_name is None:
        datasets = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
        dataset_name = datasets[0] if datasets else None
    if not names:
        if dataset_name is None:
            raise ValueError("no vocabulary: set MODEL.TEXT_CLASSIFIER.CLASS_NAMES or a dataset")
        meta = MetadataCatalog.get(dataset_name)
        if not meta.get("thing_classes", None):
            DatasetCatalog.get(dataset_name)  # loading a COCO json sets thing_classes
        names = list(meta.thing_classes)
        novel = novel or list(meta.get("novel_classes", []))
    set_vocabulary(model, names, novel)


class Trainer(DefaultTrainer):
    def __init__(self, cfg):
        # DefaultTrainer.__init__, except that the model is wrapped for CPU processes too (0.6 and
        # main pass the local rank as a GPU id) and the step is RegionTrainStep.
        TrainerBase.__init__(self)
        logger = logging.getLogger("densevlm_d2")
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        on_gpu = next(model.parameters()).device.type == "cuda"
        model = create_ddp_model(
            model, device_ids=[comm.get_local_rank()] if on_gpu else None, broadcast_buffers=False
        )
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
        return hooks

    @classmethod
    def build_model(cls, cfg):
        model = super().build_model(cfg)
        set_dataset_vocabulary(cfg, model)
        return model

    @classmethod
    def build_optimizer(cls, cfg, model):
        s = cfg.SOLVER
        clip = get_clip_backbone(model).clip
        optimizer = build_adamw(
            model,
            s.BASE_LR,
            s.WEIGHT_DECAY,
            s.ADAMW_BETAS,
            s.ADAMW_EPS,
            lr_multipliers={id(p): s.CLIP_LR_MULTIPLIER for p in clip.parameters()},
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
        if is_detector(cfg):
            return build_detection_train_loader(cfg, mapper=build_detection_mapper(cfg, True))
        if not _arch_is(cfg, RegionAlignmentModel | CATSeg):
            raise ValueError(
                f"{cfg.MODEL.META_ARCHITECTURE} is neither a detector, a region-alignment model "
                "(DenseVLM, CLIPSelf, RegionCLIP) nor CATSeg: nothing to train"
            )
        dicts = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=False)
        if _arch_is(cfg, CATSeg):
            return build_detection_train_loader(
                dicts,
                mapper=SemSegTrainMapper(cfg, True),
                total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
                num_workers=cfg.DATALOADER.NUM_WORKERS,
            )
        arch = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
        mapper = RegionTrainMapper(cfg, with_crops=arch.needs_crops)
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
        if evaluator_type == "ov_coco":
            return OVCOCOEvaluator(dataset_name, output_dir=output_folder)
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
        if is_detector(cfg):
            return build_detection_test_loader(
                cfg, dataset_name, mapper=build_detection_mapper(cfg, False)
            )
        if MetadataCatalog.get(dataset_name).get("evaluator_type", None) == "sem_seg":
            # one image per batch: images keep their own sizes
            # CAT-Seg's test images are resized by the loader (INPUT.MIN_SIZE_TEST, as published);
            # the training-free segmenter resizes them itself
            resize = _arch_is(cfg, CATSeg)
            mapper = SemSegTestMapper(
                dataset_name,
                min_size=cfg.INPUT.MIN_SIZE_TEST if resize else 0,
                max_size=cfg.INPUT.MAX_SIZE_TEST,
            )
            return build_detection_test_loader(
                DatasetCatalog.get(dataset_name),
                mapper=mapper,
                num_workers=cfg.DATALOADER.NUM_WORKERS,
            )
        return build_region_test_loader(cfg, dataset_name)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """Evaluate with the blended weights (``SOLVER.WEIGHT_BLEND_ALPHA``), as published; an
        open-vocabulary detector is evaluated on each test dataset with that dataset's classes."""
        inner = (
            model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
        )
        alpha = cfg.SOLVER.WEIGHT_BLEND_ALPHA
        blend = get_clip_backbone(inner).blended(alpha) if alpha < 1.0 else contextlib.nullcontext()
        with blend:
            if evaluators is not None or not is_detector(cfg):
                return super().test(cfg, model, evaluators)
            results = {}
            for name in cfg.DATASETS.TEST:
                set_dataset_vocabulary(cfg, inner, name)
                one = cfg.clone()
                one.defrost()
                one.DATASETS.TEST = (name,)
                results[name] = super().test(one, model)
            # as DefaultTrainer.test: a single dataset's results unwrapped
            return next(iter(results.values())) if len(results) == 1 else results
