"""``StandardROIHeads`` with a text classifier and, at test time, F-ViT's fusion with the frozen
CLIP's region scores."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import ROI_HEADS_REGISTRY, StandardROIHeads
from torch import nn

from ...clip.text import DEFAULT_TEXT_SPEC, TextSpec
from ...clip.vocabulary import BACKGROUND, Vocabulary, VocabularyError
from ...utils.activation_checkpointing import recompute_in_backward
from ..backbone.clip_vit import get_clip_backbone
from ..open_vocab import text_spec
from ..region_pooling import BoxPooler
from .text_classifier import TextClassifierOutputLayers

__all__ = ["OpenVocabROIHeads", "set_vocabulary"]


def _clip_dense(input_shape: dict) -> ShapeSpec:
    if "clip_dense" not in input_shape:
        raise ValueError(
            "OpenVocabROIHeads needs the backbone's 'clip_dense' output (the CLIP's dense map), as "
            f"build_clip_fpn_backbone gives it; the backbone gives {sorted(input_shape)}"
        )
    return input_shape["clip_dense"]


@ROI_HEADS_REGISTRY.register()
class OpenVocabROIHeads(StandardROIHeads):
    """detectron2's ``StandardROIHeads`` (box head, optional mask/keypoint heads, sampling,
    matching) whose box predictor is :class:`TextClassifierOutputLayers`.

    The backbone must provide ``clip_dense``, the frozen CLIP's dense map (see
    :class:`~densevlm_d2.modeling.backbone.CLIPFPN`): its channels are the size of the class
    embeddings. With ``MODEL.TEXT_CLASSIFIER.SCORE_FUSION.ENABLED``, test time adds F-ViT's region
    score: each proposal box (before regression) is pooled from the dense map by a 1x1 RoIAlign,
    L2-normalised and scored against the same class embeddings at ``CLIP_LOGIT_SCALE``; the two
    probabilities are fused by :func:`~densevlm_d2.modeling.roi_heads.fuse_scores`.

    ``grad_checkpointing`` (``MODEL.FVIT.GRAD_CHECKPOINTING``): the box head's and the mask head's
    convolution/FC stacks recompute their activations in the backward pass (the mask loss is
    computed once, outside).
    """

    @configurable
    def __init__(
        self,
        *,
        score_fusion: bool = False,
        clip_logit_scale: float = 75.0,
        clip_stride: int = 16,
        text_spec: TextSpec | None = None,
        grad_checkpointing: bool = False,
        **kwargs,
    ):
        """``text_spec``: how the vocabulary's class embeddings are made
        (``MODEL.TEXT_CLASSIFIER.TEXT``; :func:`~densevlm_d2.modeling.set_vocabulary` uses it)."""
        super().__init__(**kwargs)
        self.score_fusion, self.clip_logit_scale = score_fusion, clip_logit_scale
        self.clip_pooler = BoxPooler(clip_stride)
        self.text_spec = text_spec
        if grad_checkpointing:
            recompute_in_backward(self.box_head)
            if getattr(self, "mask_on", False):
                # only the layers: the loss (and its logged accuracy) must not run twice
                recompute_in_backward(self.mask_head, "layers")

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        fusion = cfg.MODEL.TEXT_CLASSIFIER.SCORE_FUSION
        ret.update(
            score_fusion=fusion.ENABLED,
            clip_logit_scale=fusion.CLIP_LOGIT_SCALE,
            clip_stride=_clip_dense(input_shape).stride,
            text_spec=text_spec(cfg.MODEL.TEXT_CLASSIFIER, "MODEL.TEXT_CLASSIFIER"),
            grad_checkpointing=cfg.MODEL.FVIT.GRAD_CHECKPOINTING,
        )
        return ret

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        args = TextClassifierOutputLayers.from_config(cfg, ret["box_head"].output_shape)
        args["embed_dim"] = _clip_dense(input_shape).channels
        ret["box_predictor"] = TextClassifierOutputLayers(**args)
        return ret

    def set_vocabulary(self, names, embeddings, background, novel=()) -> None:
        """See :meth:`TextClassifierOutputLayers.set_vocabulary`; also resizes the sampling's
        background index. A class-specific mask head cannot change its number of classes."""
        if getattr(self, "mask_on", False) and len(names) != self.num_classes:
            predictor = getattr(self.mask_head, "predictor", None)
            if predictor is not None and predictor.out_channels != 1:
                raise ValueError(
                    f"the mask head predicts one mask per training class ({self.num_classes}); set "
                    "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK True for other vocabularies"
                )
        self.box_predictor.set_vocabulary(names, embeddings, background, novel)
        self.num_classes = len(names)

    def _forward_box(self, features, proposals):
        if self.training or not self.score_fusion:
            return super()._forward_box(features, proposals)
        boxes = [x.proposal_boxes for x in proposals]
        box_features = self.box_pooler([features[f] for f in self.box_in_features], boxes)
        logits, deltas = self.box_predictor(self.box_head(box_features))
        region = self.clip_pooler(features["clip_dense"], boxes)
        embeddings = self.box_predictor.class_embeddings
        clip_logits = region @ embeddings.to(region.dtype).T * self.clip_logit_scale
        pred_instances, _ = self.box_predictor.inference((logits, deltas, clip_logits), proposals)
        return pred_instances


@torch.no_grad()
def set_vocabulary(
    model: nn.Module,
    classes: Vocabulary | Sequence[str],
    novel_classes: Sequence[str] | None = None,
    spec: TextSpec | None = None,
) -> torch.Tensor:
    """Encode the vocabulary (and "background") with the model's own CLIP and give them to every
    text classifier in ``model``. ``novel_classes``: names trained with zero weight and fused with
    the novel exponent at test time; default: the vocabulary's own novel classes when it has
    some, else the names not in the current vocabulary's base classes (all names for a model
    without one). ``spec``: the heads' own (``MODEL.TEXT_CLASSIFIER.TEXT``) by default. Returns
    the (K, D) class embeddings."""
    heads = [m for m in model.modules() if isinstance(m, OpenVocabROIHeads)]
    if not heads:
        raise ValueError("the model has no open-vocabulary ROI heads (MODEL.ROI_HEADS.NAME)")
    vocabulary = Vocabulary.from_names(classes)
    names = list(vocabulary.names)
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise VocabularyError(
            f"a detector's vocabulary must not repeat names; it repeats {repeated}"
        )
    if novel_classes is None and vocabulary.novel:
        novel_classes = vocabulary.novel
    if novel_classes is None:
        predictor = heads[0].box_predictor
        base = {
            n
            for n, novel in zip(predictor.class_names, predictor.novel.tolist()[:-1], strict=True)
            if not novel
        }
        novel_classes = [n for n in names if n not in base]
    spec = spec or heads[0].text_spec or DEFAULT_TEXT_SPEC
    backbone = get_clip_backbone(model)
    embeddings = backbone.text_embeddings(vocabulary, spec)
    background = backbone.text_embeddings(Vocabulary.from_names([BACKGROUND]), spec)[0]
    for head in heads:
        head.set_vocabulary(names, embeddings, background, list(novel_classes))
    return embeddings
