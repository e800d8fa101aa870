"""DenseVLM and the CLIPSelf and RegionCLIP baselines: fine-tuning a CLIP ViT's dense features.

Each is a :class:`CLIPRegionClassifier` whose training forward returns a loss; in eval mode it is
the region classifier itself, so evaluation during training runs exactly as ``--eval-only`` does.
The student is the backbone (:class:`~densevlm_d2.modeling.CLIPViTBackbone`, ``MODEL.CLIP``; its
last ``TRAINABLE_BLOCKS`` vision blocks train). Frozen teachers are
``CLIPViTBackbone(teacher=True)`` modules, rebuilt from their own checkpoints when the model is
built and left out of detectron2 checkpoints.

Their data (:class:`RegionAlignmentModel`'s :meth:`~RegionAlignmentModel.build_train_loader`):
the uint8 canvases and boxes of :class:`~densevlm_d2.data.mappers.RegionTrainMapper`, plus the
region crops when the class says :attr:`~RegionAlignmentModel.needs_crops`; the student is
``model.backbone`` (:func:`~densevlm_d2.modeling.get_clip_backbone`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.data import build_detection_train_loader
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils.events import get_event_storage

from ...data.mappers import RegionTrainMapper
from ...data.vocabulary import dataset_vocabulary
from ..backbone.clip_vit import CLIPViTBackbone, embeddings_files
from ..losses import clipself_loss, densevlm_loss, regionclip_loss
from ..open_vocab import text_spec
from ..pixels import PixelNormalizer
from ..region_pooling import BoxPooler
from .base import training_dicts
from .region_classifier import CLIPRegionClassifier

__all__ = ["CLIPSelf", "DenseVLM", "RegionAlignmentModel", "RegionCLIP", "published_thing_split"]

logger = logging.getLogger(__name__)


def published_thing_split(is_thing: list[bool]) -> list[bool]:
    """The published code's thing/stuff split: it reads the number of thing classes off the
    embedding file's name (``Thing204``) and treats indices below that number minus one as things,
    so the vocabulary's last thing class counts as stuff. Needs a vocabulary that lists its things
    first."""
    n = sum(is_thing)
    if any(is_thing[n:]) or not all(is_thing[:n]):
        raise ValueError("the published thing split needs a vocabulary that lists its things first")
    return [i < n - 1 for i in range(len(is_thing))]


class RegionAlignmentModel(CLIPRegionClassifier):
    """Shared training plumbing: canvases -> student dense map -> box features -> :meth:`losses`.

    The train mapper cuts region crops for a model whose class sets ``needs_crops``; the student
    CLIP (``backbone``) must train (``MODEL.CLIP.FINETUNE``).
    """

    #: whether the train mapper must cut region crops
    needs_crops: ClassVar[bool] = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.backbone.is_frozen:
            raise ValueError(
                f"{type(self).__name__} trains the student: set MODEL.CLIP.FINETUNE (e.g. "
                "'blocks' with MODEL.CLIP.TRAINABLE_BLOCKS)"
            )

    @classmethod
    def build_train_loader(cls, cfg):
        """Region canvases and boxes (:class:`~densevlm_d2.data.mappers.RegionTrainMapper`)."""
        return build_detection_train_loader(
            training_dicts(cfg),
            mapper=RegionTrainMapper(cfg, with_crops=cls.needs_crops),
            total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
            aspect_ratio_grouping=False,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )

    def train(self, mode: bool = True):
        super().train(mode)
        for module in self.modules():  # frozen teachers stay in eval mode
            if isinstance(module, CLIPViTBackbone) and module.is_teacher:
                module.eval()
        return self

    def forward(self, batched_inputs):
        if not self.training:
            return super().forward(batched_inputs)
        images = torch.stack([x["image"] for x in batched_inputs]).to(
            self.device, non_blocking=True
        )
        boxes = [x["boxes"].to(self.device) for x in batched_inputs]
        if sum(len(b) for b in boxes) == 0:
            raise ValueError("a training batch has no regions")
        dense = self.backbone(self.pixels(images))["dense"]
        return self.losses(batched_inputs, images, boxes, self.box_pooler(dense, boxes))

    def losses(self, batched_inputs, images, boxes, student_features) -> dict[str, torch.Tensor]:
        """The method's losses from the uint8 canvases, the boxes and the student box features."""
        raise NotImplementedError


def teacher_normalizer(mean: Sequence[float], std: Sequence[float]) -> PixelNormalizer | None:
    """``MODEL.DENSEVLM.TEACHER.PIXEL_MEAN`` / ``PIXEL_STD`` as the teacher's normaliser; None when
    both are empty (the teacher normalises as the student does)."""
    if bool(len(mean)) != bool(len(std)):
        raise ValueError(
            "MODEL.DENSEVLM.TEACHER.PIXEL_MEAN and PIXEL_STD are set together or not at all, got "
            f"{list(mean)} and {list(std)}"
        )
    return PixelNormalizer(mean, std) if len(mean) else None


@META_ARCH_REGISTRY.register()
class DenseVLM(RegionAlignmentModel):
    """Unbiased region-language alignment (docs/published_code.md, "Training" and "DenseVLM's
    loss").

    A frozen teacher (P-VLM, e.g. the refined EVA02-CLIP-L/14) classifies each region against a
    thing and stuff vocabulary; confident regions are distilled into the student with the decoupled
    KL loss (:func:`~densevlm_d2.modeling.losses.densevlm_loss`).
    """

    @configurable
    def __init__(
        self,
        *,
        teacher: CLIPViTBackbone,
        teacher_input: str = "pad",
        student_text: torch.Tensor,
        teacher_text: torch.Tensor,
        class_is_thing: torch.Tensor,
        temperature: float = 0.01,
        threshold: float = 0.3,
        stuff_classes: str = "all",
        renormalize_text: bool = True,
        teacher_pixels: PixelNormalizer | None = None,
        **kwargs,
    ):
        """``teacher_pixels``: the teacher's own pixel normalisation where it differs from the
        student's (None: the student's)."""
        super().__init__(**kwargs)
        self.teacher_pixels = teacher_pixels
        if not teacher.is_teacher:
            raise ValueError("DenseVLM's teacher must be a CLIPViTBackbone(teacher=True)")
        self.teacher = teacher.eval()
        if teacher_input not in ("pad", "published"):
            raise ValueError(f"teacher input must be 'pad' or 'published', got {teacher_input!r}")
        self.teacher_input = teacher_input
        self.register_buffer("student_text", student_text.float(), persistent=False)
        self.register_buffer("teacher_text", teacher_text.float(), persistent=False)
        self.register_buffer("class_is_thing", class_is_thing.bool(), persistent=False)
        self.temperature, self.threshold = temperature, threshold
        self.stuff_classes, self.renormalize_text = stuff_classes, renormalize_text

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        c = cfg.MODEL.DENSEVLM
        student = ret["backbone"]
        teacher_pixels = teacher_normalizer(c.TEACHER.PIXEL_MEAN, c.TEACHER.PIXEL_STD)
        teacher = CLIPViTBackbone(
            model_name=c.TEACHER.MODEL_NAME,
            checkpoint=c.TEACHER.CHECKPOINT,
            text_cache_dir=student.text_cache_dir,
            text_embeddings_files=embeddings_files(
                c.TEACHER.TEXT_EMBEDDINGS, "MODEL.DENSEVLM.TEACHER.TEXT_EMBEDDINGS"
            ),
            teacher=True,
            checkpoint_role="teacher CLIP (MODEL.DENSEVLM.TEACHER.CHECKPOINT)",
            random_init=True,  # checked by the checkpointer unless MODEL.CLIP.RANDOM_INIT
        )
        vocabulary = dataset_vocabulary(c.VOCABULARY)
        is_thing = vocabulary.thing_flags("DenseVLM's vocabulary (MODEL.DENSEVLM.VOCABULARY)")
        if c.THING_SPLIT == "published":
            is_thing = published_thing_split(is_thing)
        elif c.THING_SPLIT != "metadata":
            raise ValueError(
                f"MODEL.DENSEVLM.THING_SPLIT must be metadata or published, got {c.THING_SPLIT!r}"
            )
        renormalize = c.RENORMALIZE_TEXT
        spec = text_spec(c, "MODEL.DENSEVLM", renormalize=renormalize)
        ret.update(
            teacher=teacher,
            teacher_input=c.TEACHER.INPUT,
            student_text=student.text_embeddings(vocabulary, spec),
            teacher_text=teacher.text_embeddings(vocabulary, spec),
            class_is_thing=torch.tensor(is_thing),
            temperature=c.TEMPERATURE,
            threshold=c.THRESHOLD,
            stuff_classes=c.STUFF_CLASSES,
            renormalize_text=renormalize,
            teacher_pixels=teacher_pixels,
        )
        return ret

    def teacher_features(self, images: torch.Tensor, boxes) -> torch.Tensor:
        """Teacher box features. ``"pad"``: the canvas is zero padded to a multiple of the teacher's
        patch, boxes stay aligned. ``"published"``: the canvas as is, so a 14-px patch covers 504 of
        512 px (36 tokens) while the boxes are scaled to the whole canvas, as published."""
        p, size = self.teacher.patch_size, images.shape[-1]
        if self.teacher_input == "pad":
            extra = (-size) % p
            images, stride = F.pad(images, (0, extra, 0, extra)), p
        else:
            stride = size / (size // p)
        pixels = self.teacher_pixels if self.teacher_pixels is not None else self.pixels
        dense = self.teacher.features(pixels(images), dense=True).dense
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
            self.renormalize_text,
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

    needs_crops = True

    @configurable
    def __init__(self, *, cosine_weight: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.teacher = self.backbone.frozen_copy()
        self.cosine_weight = cosine_weight

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret["cosine_weight"] = cfg.MODEL.CLIPSELF.COSINE_WEIGHT
        return ret

    def losses(self, batched_inputs, images, boxes, student_features):
        crops = torch.cat([x["crops"] for x in batched_inputs])
        with torch.no_grad():
            target = self.teacher.encode_crops(crops, self.crop_batch_size)
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
        concepts = dataset_vocabulary(c.CONCEPTS)
        ret.update(
            concept_embeddings=ret["backbone"].text_embeddings(
                concepts, text_spec(c, "MODEL.REGIONCLIP")
            ),
            num_sampled=c.NUM_SAMPLED,
            contrast_weight=c.CONTRAST_WEIGHT,
        )
        return ret

    def losses(self, batched_inputs, images, boxes, student_features):
        labels = torch.cat([x["labels"] for x in batched_inputs]).to(self.device)
        scale = float(self.backbone.model.logit_scale.exp())
        loss = regionclip_loss(
            student_features, labels, self.concept_embeddings, scale, self.num_sampled
        )
        return {"loss_contrast": self.contrast_weight * loss}
