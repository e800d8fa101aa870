"""DenseVLM and the CLIPSelf and RegionCLIP baselines: fine-tuning a CLIP ViT's dense features.

Each is a :class:`CLIPRegionClassifier` whose training forward returns a loss; in eval mode it is
the region classifier itself, so evaluation during training runs exactly as ``--eval-only`` does.
The student is the backbone's CLIP (``MODEL.CLIP``; its last ``TRAINABLE_BLOCKS`` vision blocks
train). Frozen teachers are rebuilt from their own checkpoints when the model is built and are left
out of detectron2 checkpoints (``checkpoint_exclude_prefixes``).
"""

from __future__ import annotations

import copy
import logging

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils.events import get_event_storage
from torch import nn

from ...clip.checkpoint import load_checkpoint
from ...clip.models import build_clip_model
from ...clip.text import TextEmbedder, load_text_embeddings
from ...clip.towers import vision_tower
from ...data.datasets.vocabulary import vocabulary
from ..losses import clipself_loss, densevlm_loss, regionclip_loss
from ..region_pooling import BoxPooler
from .region_classifier import CLIPRegionClassifier

__all__ = ["CLIPSelf", "DenseVLM", "RegionAlignmentModel", "RegionCLIP", "class_embeddings"]

logger = logging.getLogger(__name__)


def class_embeddings(
    clip: nn.Module,
    model_name: str,
    names,
    npy: str = "",
    renormalize: bool = True,
    cache_dir="default",
) -> torch.Tensor:
    """(K, D) class embeddings of ``clip`` for ``names``: read from ``npy`` (published layout) when
    given, else built by the text classifier (cached on disk)."""
    if npy:
        return load_text_embeddings(
            npy, num_classes=len(names), dim=vision_tower(clip.visual).output_dim
        )
    return TextEmbedder(clip, model_name, cache_dir)(list(names), renormalize=renormalize)


def _frozen(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


class RegionAlignmentModel(CLIPRegionClassifier):
    """Shared training plumbing: canvases -> student dense map -> box features -> :meth:`losses`."""

    checkpoint_exclude_prefixes: tuple[str, ...] = ()
    needs_crops = False  # whether the train mapper must cut region crops

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # Dense-feature losses give no gradient to the last block's query/key projections; frozen,
        # so that DistributedDataParallel does not wait for them (and weight decay leaves them be,
        # as AdamW does for parameters without gradients in the published code).
        for p in self.backbone.tower.dense_unused_parameters():
            p.requires_grad_(False)
        # the student's weights before training: the other end of the weight-space blend (alpha)
        self.initial_clip_state = {
            k: v.detach().cpu().clone() for k, v in self.backbone.clip.state_dict().items()
        }

    @classmethod
    def from_config(cls, cfg):
        if cfg.MODEL.CLIP.FROZEN:
            raise ValueError(f"{cls.__name__} trains the student: set MODEL.CLIP.FROZEN False")
        return super().from_config(cfg)

    def train(self, mode: bool = True):
        super().train(mode)
        for prefix in self.checkpoint_exclude_prefixes:  # frozen teachers stay in eval mode
            self.get_submodule(prefix.rstrip(".")).eval()
        return self

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() - self.pixel_mean) / self.pixel_std

    def forward(self, batched_inputs):
        if not self.training:
            return super().forward(batched_inputs)
        images = torch.stack([x["image"] for x in batched_inputs]).to(
            self.device, non_blocking=True
        )
        boxes = [x["boxes"].to(self.device) for x in batched_inputs]
        if sum(len(b) for b in boxes) == 0:
            raise ValueError("a training batch has no regions")
        dense = self.backbone(self.normalize(images))["dense"]
        return self.losses(batched_inputs, images, boxes, self.box_pooler(dense, boxes))

    def losses(self, batched_inputs, images, boxes, student_features) -> dict[str, torch.Tensor]:
        """The method's losses from the uint8 canvases, the boxes and the student box features."""
        raise NotImplementedError


@META_ARCH_REGISTRY.register()
class DenseVLM(RegionAlignmentModel):
    """Unbiased region-language alignment (reference.md sections 1 and 3).

    A frozen teacher (P-VLM, e.g. the refined EVA02-CLIP-L/14) classifies each region against a
    thing and stuff vocabulary; confident regions are distilled into the student with the decoupled
    KL loss (:func:`~densevlm_d2.modeling.losses.densevlm_loss`).
    """

    checkpoint_exclude_prefixes = ("teacher.",)

    @configurable
    def __init__(
        self,
        *,
        teacher: nn.Module,
        teacher_input: str = "pad",
        student_text: torch.Tensor,
        teacher_text: torch.Tensor,
        class_is_thing: torch.Tensor,
        temperature: float = 0.01,
        threshold: float = 0.3,
        stuff_classes: str = "all",
        normalize_text: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.teacher = _frozen(teacher)
        self.teacher_tower = vision_tower(teacher.visual)
        if teacher_input not in ("pad", "published"):
            raise ValueError(f"teacher input must be 'pad' or 'published', got {teacher_input!r}")
        self.teacher_input = teacher_input
        self.register_buffer("student_text", student_text.float(), persistent=False)
        self.register_buffer("teacher_text", teacher_text.float(), persistent=False)
        self.register_buffer("class_is_thing", class_is_thing.bool(), persistent=False)
        self.temperature, self.threshold = temperature, threshold
        self.stuff_classes, self.normalize_text = stuff_classes, normalize_text

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        c = cfg.MODEL.DENSEVLM
        teacher = build_clip_model(c.TEACHER.MODEL_NAME)
        if c.TEACHER.CHECKPOINT:
            load_checkpoint(teacher, c.TEACHER.CHECKPOINT)
        else:
            logger.warning("MODEL.DENSEVLM.TEACHER.CHECKPOINT is empty: the teacher is random")
        names, is_thing = vocabulary(c.VOCABULARY)
        if c.THING_SPLIT == "published":  # the published code: classes 0..202 are things
            is_thing = [i < 203 for i in range(len(names))]
        elif c.THING_SPLIT != "metadata":
            raise ValueError(
                f"MODEL.DENSEVLM.THING_SPLIT must be metadata or published, got {c.THING_SPLIT!r}"
            )
        student, cache = ret["backbone"], ret["text_cache_dir"]
        ret.update(
            teacher=teacher,
            teacher_input=c.TEACHER.INPUT,
            student_text=class_embeddings(
                student.clip,
                student.model_name,
                names,
                c.STUDENT_TEXT_EMBEDDINGS,
                c.RENORMALIZE_TEXT,
                cache,
            ),
            teacher_text=class_embeddings(
                teacher,
                c.TEACHER.MODEL_NAME,
                names,
                c.TEACHER.TEXT_EMBEDDINGS,
                c.RENORMALIZE_TEXT,
                cache,
            ),
            class_is_thing=torch.tensor(is_thing),
            temperature=c.TEMPERATURE,
            threshold=c.THRESHOLD,
            stuff_classes=c.STUFF_CLASSES,
            normalize_text=c.RENORMALIZE_TEXT,
        )
        return ret

    def teacher_features(self, images: torch.Tensor, boxes) -> torch.Tensor:
        """Teacher box features. ``"pad"``: the canvas is zero padded to a multiple of the teacher's
        patch, boxes stay aligned. ``"published"``: the canvas as is, so a 14-px patch covers 504 of
        512 px (36 tokens) while the boxes are scaled to the whole canvas, as published."""
        p, size = self.teacher_tower.patch_size, images.shape[-1]
        if self.teacher_input == "pad":
            extra = (-size) % p
            images, stride = F.pad(images, (0, extra, 0, extra)), p
        else:
            stride = size / (size // p)
        dense = self.teacher_tower.forward(self.normalize(images), dense=True).dense
        return BoxPooler(stride)(dense, boxes)

    def losses(self, batched_inputs, images, boxes, student_features):
        with torch.no_grad():
            teacher = self.teacher_features(images, boxes)
        loss, stats = densevlm_loss(
            student_features,
            teacher,
            self.student_text,
            self.teacher_text,
            self.class_is_thing,
            self.temperature,
            self.threshold,
            self.stuff_classes,
            self.normalize_text,
        )
        storage = get_event_storage()
        storage.put_scalar("densevlm/kept_fraction", stats["kept"] / len(student_features))
        storage.put_scalar("densevlm/thing_fraction", stats["thing"] / len(student_features))
        if stats["kept"] == 0:
            logger.warning(
                "no region passed the teacher's confidence threshold %s: zero loss", self.threshold
            )
        return {"loss_kl": loss}


@META_ARCH_REGISTRY.register()
class CLIPSelf(RegionAlignmentModel):
    """CLIPSelf: the student's region features are aligned (1 - cosine) with the CLS embeddings of
    the region crops by a frozen copy of the initial model. Needs crops from the train mapper."""

    checkpoint_exclude_prefixes = ("teacher.",)
    needs_crops = True

    @configurable
    def __init__(self, *, cosine_weight: float = 1.0, crop_batch: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.teacher = _frozen(copy.deepcopy(self.backbone.clip))
        self.teacher_tower = vision_tower(self.teacher.visual)
        self.cosine_weight = cosine_weight
        self.crop_batch = crop_batch

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret["cosine_weight"] = cfg.MODEL.CLIPSELF.COSINE_WEIGHT
        return ret

    def losses(self, batched_inputs, images, boxes, student_features):
        crops = torch.cat([x["crops"] for x in batched_inputs]).to(self.device)
        with torch.no_grad():
            target = torch.cat(
                [
                    self.teacher_tower.forward(
                        crops[i : i + self.crop_batch], dense=False, image=True
                    ).image
                    for i in range(0, len(crops), self.crop_batch)
                ]
            )
        return {"loss_cosine": self.cosine_weight * clipself_loss(student_features, target)}


@META_ARCH_REGISTRY.register()
class RegionCLIP(RegionAlignmentModel):
    """RegionCLIP as re-implemented in the DenseVLM repository: box features classified against a
    concept pool with sigmoid BCE on pseudo labels and sampled negative concepts."""

    @configurable
    def __init__(
        self,
        *,
        concept_embeddings: torch.Tensor,
        num_sampled: int = 100,
        contrast_weight: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.register_buffer("concept_embeddings", concept_embeddings.float(), persistent=False)
        self.num_sampled = num_sampled
        self.contrast_weight = contrast_weight

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        c = cfg.MODEL.REGIONCLIP
        DatasetCatalog.get(c.CONCEPTS)  # loading a box dataset sets its category names
        names = MetadataCatalog.get(c.CONCEPTS).classes
        student = ret["backbone"]
        ret.update(
            concept_embeddings=class_embeddings(
                student.clip,
                student.model_name,
                names,
                c.CONCEPT_EMBEDDINGS,
                True,
                ret["text_cache_dir"],
            ),
            num_sampled=c.NUM_SAMPLED,
            contrast_weight=c.CONTRAST_WEIGHT,
        )
        return ret

    def losses(self, batched_inputs, images, boxes, student_features):
        labels = torch.cat([x["labels"] for x in batched_inputs]).to(self.device)
        scale = float(self.backbone.clip.logit_scale.exp())
        loss = regionclip_loss(
            student_features, labels, self.concept_embeddings, scale, self.num_sampled
        )
        return {"loss_contrast": self.contrast_weight * loss}
