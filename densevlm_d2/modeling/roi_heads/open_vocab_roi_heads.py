"""``StandardROIHeads`` with a text classifier and, at test time, F-ViT's fusion with the frozen
CLIP's region scores."""

from __future__ import annotations

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import ROI_HEADS_REGISTRY, StandardROIHeads

from ...config import resolve_deprecated_keys
from ..region_pooling import BoxPooler
from .text_classifier import TextClassifierOutputLayers

__all__ = ["OpenVocabROIHeads"]


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
    """

    @configurable
    def __init__(
        self, *, fusion: bool = False, vlm_temperature: float = 75.0, vlm_stride: int = 16, **kwargs
    ):
        super().__init__(**kwargs)
        self.fusion, self.vlm_temperature = fusion, vlm_temperature
        self.vlm_pooler = BoxPooler(vlm_stride)

    @classmethod
    def from_config(cls, cfg, input_shape):
        cfg = resolve_deprecated_keys(cfg)
        ret = super().from_config(cfg, input_shape)
        fusion = cfg.MODEL.TEXT_CLASSIFIER.SCORE_FUSION
        ret.update(
            fusion=fusion.ENABLED,
            vlm_temperature=fusion.CLIP_LOGIT_SCALE,
            vlm_stride=_clip_dense(input_shape).stride,
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
        if self.training or not self.fusion:
            return super()._forward_box(features, proposals)
        boxes = [x.proposal_boxes for x in proposals]
        box_features = self.box_pooler([features[f] for f in self.box_in_features], boxes)
        logits, deltas = self.box_predictor(self.box_head(box_features))
        region = self.vlm_pooler(features["clip_dense"], boxes)
        embeddings = self.box_predictor.class_embeddings
        vlm_logits = region @ embeddings.to(region.dtype).T * self.vlm_temperature
        pred_instances, _ = self.box_predictor.inference((logits, deltas, vlm_logits), proposals)
        return pred_instances
