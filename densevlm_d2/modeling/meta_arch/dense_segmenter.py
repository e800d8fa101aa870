"""Training-free open-vocabulary semantic segmentation with a CLIP's dense map.

:class:`CLIPDenseSegmenter` classifies every pixel against the class names of the input's dataset
with the backbone's ``"dense"`` output (the map region classification pools), following SCLIP's
protocol (:mod:`densevlm_d2.modeling.dense_segmentation`; every parameter is a
``MODEL.DENSE_SEG`` key). Its outputs are detectron2's semantic-segmentation outputs, scored by
detectron2's ``SemSegEvaluator``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from torch import nn

from ...clip.text import IMAGENET_TEMPLATES, TEMPLATES
from ..backbone.clip_vit import CLIPViTBackbone
from ..dense_segmentation import (
    class_probabilities,
    decide,
    expand_synonyms,
    resize_short_side,
    sliding_window_logits,
)
from ..open_vocab import segmentation_vocabulary

__all__ = ["CLIPDenseSegmenter", "PROMPT_TEMPLATES", "SYNONYM_MODES"]

#: ``MODEL.DENSE_SEG.TEMPLATES``: OpenAI's 80 ImageNet templates, or DenseVLM's 63 (ViLD's)
PROMPT_TEMPLATES = {"imagenet": IMAGENET_TEMPLATES, "vild": TEMPLATES}
#: ``MODEL.DENSE_SEG.SYNONYMS`` for ``", "``-separated class names: "max": one query per synonym,
#: a class takes its best synonym's probability (SCLIP); "mean": one query per class, the mean of
#: the synonyms' embeddings; "joint": the whole string in each prompt
SYNONYM_MODES = ("max", "mean", "joint")


@META_ARCH_REGISTRY.register()
class CLIPDenseSegmenter(nn.Module):
    """Per-pixel classification of the CLIP's dense map against text (no training).

    Inputs: dicts with ``image`` ((3, H, W) uint8 RGB, the original image), ``dataset_name`` (its
    ``query_classes``, else its ``stuff_classes``, are the vocabulary, ``background_index`` the
    background class if any) or ``classes`` (a list of names, for any vocabulary at run time), and
    optionally ``height`` / ``width`` (the output size; default: the image's).

    Outputs: ``{"sem_seg": (K, height, width) float32}``, the class probabilities after the
    protocol's thresholds, whose argmax over classes is the prediction (a pixel turned background
    by the probability threshold has a background score of 1).
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
        templates: str = "imagenet",
        prompt_style: str = "plain",
        synonyms: str = "max",
        text_embeddings_file: str = "",
    ):
        super().__init__()
        if "dense" not in backbone.output_shape():
            raise ValueError(
                f"{type(self).__name__} needs the backbone's 'dense' output "
                "(MODEL.CLIP.OUT_FEATURES)"
            )
        if templates not in PROMPT_TEMPLATES:
            raise ValueError(
                f"MODEL.DENSE_SEG.TEMPLATES must be one of {list(PROMPT_TEMPLATES)}, got "
                f"{templates!r}"
            )
        if synonyms not in SYNONYM_MODES:
            raise ValueError(
                f"MODEL.DENSE_SEG.SYNONYMS must be one of {SYNONYM_MODES}, got {synonyms!r}"
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
        self.backbone = backbone
        self.short_side, self.max_long_side = short_side, max_long_side
        self.round_resized = round_resized
        self.window, self.stride, self.window_batch = window, stride, window_batch
        self.logit_scale = logit_scale
        self.prob_threshold, self.area_threshold = prob_threshold, area_threshold
        self.templates = PROMPT_TEMPLATES[templates]
        self.prompt_style = prompt_style
        self.synonyms = synonyms
        self.text_embeddings_file = text_embeddings_file
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self._queries: dict[tuple[str, ...], tuple[torch.Tensor, torch.Tensor | None]] = {}

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
            "templates": c.TEMPLATES,
            "prompt_style": c.PROMPT_STYLE,
            "synonyms": c.SYNONYMS,
            "text_embeddings_file": c.TEXT_EMBEDDINGS,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # -- text --------------------------------------------------------------------------------------
    def text_queries(self, classes: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(Q, D) unit-norm query embeddings on the model's device, and the class of each query
        (None when there is one query per class). Cached per vocabulary."""
        key = tuple(classes)
        if key not in self._queries:
            embed = self.backbone.class_embeddings
            if self.text_embeddings_file:
                emb, owner = embed(list(classes), self.text_embeddings_file), None
            elif self.synonyms == "max":
                names, owner = expand_synonyms(classes)
                emb = embed(names, templates=self.templates, style=self.prompt_style)
                owner = torch.tensor(owner) if len(names) != len(classes) else None
            else:
                split = "split" if self.synonyms == "mean" else "joint"
                emb = embed(
                    list(classes), templates=self.templates, synonyms=split, style=self.prompt_style
                )
                owner = None
            emb = F.normalize(emb.float(), dim=-1).to(self.device)
            self._queries[key] = (emb, owner.to(self.device) if owner is not None else None)
        return self._queries[key]

    @staticmethod
    def vocabulary(inp: dict) -> tuple[list[str], int | None]:
        """(class names, background index) of an input
        (:func:`~densevlm_d2.modeling.open_vocab.segmentation_vocabulary`)."""
        return segmentation_vocabulary(inp)

    # -- pixels ------------------------------------------------------------------------------------
    def dense(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)["dense"]

    @torch.no_grad()
    def segment(
        self,
        image: torch.Tensor,
        classes: Sequence[str],
        background: int | None = None,
        output_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """(3, H, W) uint8 RGB image -> (K, H', W') scores (see the class docstring)."""
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a (3, H, W) RGB image, got shape {tuple(image.shape)}")
        output_size = output_size or tuple(image.shape[-2:])
        text, owner = self.text_queries(classes)
        x = resize_short_side(
            image.to(self.device),
            self.short_side,
            self.max_long_side,
            round_pixels=self.round_resized,
        )
        x = (x - self.pixel_mean) / self.pixel_std
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
            classes, background = self.vocabulary(inp)
            image = inp["image"]
            size = (inp.get("height", image.shape[-2]), inp.get("width", image.shape[-1]))
            results.append({"sem_seg": self.segment(image, classes, background, size)})
        return results
