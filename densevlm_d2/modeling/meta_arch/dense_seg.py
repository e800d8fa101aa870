"""Training-free open-vocabulary semantic segmentation with a CLIP's dense map.

:class:`CLIPDenseSegmenter` classifies every pixel against the class names of the input's
vocabulary with the backbone's ``"dense"`` output (the map region classification pools), following
SCLIP's protocol (:mod:`densevlm_d2.modeling.dense_seg`; every parameter is a ``MODEL.DENSE_SEG``
key). Its outputs are detectron2's semantic-segmentation outputs, scored by
:class:`~densevlm_d2.evaluation.SemSegMetricsEvaluator`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from torch import nn

from ...clip.text import TextSpec
from ...clip.vocabulary import Vocabulary
from ...data.build import build_sem_seg_test_loader
from ..backbone.clip_vit import CLIPViTBackbone
from ..dense_seg import class_probabilities, decide, resize_short_side, sliding_window_logits
from ..open_vocab import input_vocabulary, output_size, text_spec
from ..pixels import PixelNormalizer, check_image
from .base import DataContract

__all__ = ["CLIPDenseSegmenter"]

_SCLIP_TEXT = TextSpec(prompts="imagenet", style="plain", synonyms="max")


@META_ARCH_REGISTRY.register()
class CLIPDenseSegmenter(DataContract, nn.Module):
    """Per-pixel classification of the CLIP's dense map against text (no training).

    Inputs: dicts with ``image`` ((3, H, W) RGB, 0-255, the original image), ``dataset_name`` (its
    vocabulary's queries are asked about, its background class is the background) or ``classes``
    (a list of names or a :class:`~densevlm_d2.clip.Vocabulary`, for any vocabulary at run time;
    ``background_index`` optional), and optionally ``height`` / ``width`` (the output size;
    default: the image's).

    Outputs: ``{"sem_seg": (K, height, width) float32}``, the class probabilities after the
    protocol's thresholds, whose argmax over classes is the prediction (a pixel turned background
    by the probability threshold has a background score of 1).

    ``text`` (``MODEL.DENSE_SEG.TEXT``): the queries; with synonyms "max" one query per synonym,
    a class taking its best synonym's probability (SCLIP).
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: CLIPViTBackbone,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        short_side: int = 336,
        max_long_side: int = 2048,
        round_resized: bool = True,
        window: int = 224,
        stride: int = 112,
        window_batch: int = 16,
        logit_scale: float = 40.0,
        prob_threshold: float = 0.0,
        area_threshold: float = 0.0,
        text: TextSpec = _SCLIP_TEXT,
    ):
        super().__init__()
        if "dense" not in backbone.output_shape():
            raise ValueError(
                f"{type(self).__name__} needs the backbone's 'dense' output "
                "(MODEL.CLIP.OUT_FEATURES)"
            )
        if window > 0 and not 0 < stride <= window:
            raise ValueError(
                f"MODEL.DENSE_SEG.STRIDE must be in (0, WINDOW={window}], got {stride}"
            )
        if not 0 <= prob_threshold <= 1 or not 0 <= area_threshold < 1:
            raise ValueError(
                "MODEL.DENSE_SEG.PROB_THRESHOLD must be in [0, 1] and AREA_THRESHOLD in [0, 1), "
                f"got {prob_threshold} and {area_threshold}"
            )
        if not text.ensemble:
            raise ValueError("the dense segmenter scores one embedding per query (an ensemble)")
        self.backbone = backbone
        self.short_side, self.max_long_side = short_side, max_long_side
        self.round_resized = round_resized
        self.window, self.stride, self.window_batch = window, stride, window_batch
        self.logit_scale = logit_scale
        self.prob_threshold, self.area_threshold = prob_threshold, area_threshold
        self.text = text
        self.pixels = PixelNormalizer(pixel_mean, pixel_std)

    @classmethod
    def from_config(cls, cfg):
        return {"backbone": build_backbone(cfg), **cls.protocol_from_config(cfg)}

    @staticmethod
    def protocol_from_config(cfg) -> dict:
        """Every argument but the backbone (a segmenter for another benchmark can share one)."""
        c = cfg.MODEL.DENSE_SEG
        return {
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "short_side": c.SHORT_SIDE,
            "max_long_side": c.MAX_LONG_SIDE,
            "round_resized": c.ROUND_RESIZED,
            "window": c.WINDOW,
            "stride": c.STRIDE,
            "window_batch": c.WINDOW_BATCH,
            "logit_scale": c.LOGIT_SCALE,
            "prob_threshold": c.PROB_THRESHOLD,
            "area_threshold": c.AREA_THRESHOLD,
            "text": text_spec(c, "MODEL.DENSE_SEG", allow_max=True),
        }

    # -- data --------------------------------------------------------------------------------------
    @classmethod
    def build_test_loader(cls, cfg, dataset_name: str):
        """Semantic-segmentation datasets, original images one at a time (the model resizes)."""
        return build_sem_seg_test_loader(cfg, dataset_name, min_size=0)

    @property
    def device(self) -> torch.device:
        return self.pixels.device

    # -- text --------------------------------------------------------------------------------------
    def text_queries(self, vocabulary: Vocabulary) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(Q, D) unit-norm query embeddings on the model's device, and the class of each query
        (None when there is one query per class); the backbone's text route caches them."""
        emb, owner = self.backbone.text_queries(vocabulary, self.text)
        emb = F.normalize(emb.float(), dim=-1).to(self.device)
        return emb, (owner.to(self.device) if owner is not None else None)

    # -- pixels ------------------------------------------------------------------------------------
    def dense(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)["dense"]

    @torch.no_grad()
    def segment(
        self,
        image: torch.Tensor,
        classes: Vocabulary | Sequence[str],
        background: int | None = None,
        output_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """(3, H, W) RGB image (0-255) -> (K, H', W') scores (see the class docstring) for the
        vocabulary ``classes`` (a list of names is checked as one; ``background``: its background
        class, when not given by the vocabulary)."""
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a (3, H, W) RGB image, got shape {tuple(image.shape)}")
        check_image(image)
        vocabulary = Vocabulary.from_names(classes)
        if background is not None:  # checked as the vocabulary's own would be
            vocabulary = vocabulary.replace(background_index=background)
        background = vocabulary.background_index
        output_size = output_size or tuple(image.shape[-2:])
        text, owner = self.text_queries(vocabulary)
        x = resize_short_side(
            image.to(self.device),
            self.short_side,
            self.max_long_side,
            round_pixels=self.round_resized,
        )
        x = self.pixels(x)
        logits = sliding_window_logits(
            self.dense, x, text, output_size, self.window, self.stride, self.window_batch
        )
        probs = class_probabilities(logits, self.logit_scale, owner)
        return decide(probs, background, self.prob_threshold, self.area_threshold)

    def forward(self, batched_inputs):
        if self.training:
            raise NotImplementedError(
                "CLIPDenseSegmenter only evaluates (training-free); train a CLIP with the "
                "DenseVLM, CLIPSelf or RegionCLIP meta-architecture"
            )
        results = []
        for inp in batched_inputs:
            queries = input_vocabulary(inp).queries
            image = inp["image"]
            results.append({"sem_seg": self.segment(image, queries, None, output_size(inp))})
        return results
