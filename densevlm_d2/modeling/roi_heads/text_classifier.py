"""Fast R-CNN outputs with a text classifier: the box head's features are scored against class text
embeddings (F-ViT's ``FViTBBoxHead``, CLIPSelf repository ``F-ViT/models/fvit_head.py``).

* Classification branch: ``Linear(C -> D) + ReLU`` on the shared box-head features, L2-normalised,
  dot product with the (K + 1, D) embeddings (K class names, then the fixed text embedding of
  "background"), times a logit scale (learned, initialised at 50, as published, which calls it a
  temperature).
* Regression branch: ``Linear(C -> C) + ReLU -> Linear(C -> 4)``, class-agnostic.
* Loss: cross-entropy with per-class weights (published: 1 for base classes, 0 for novel ones, whose
  logits are set to ``-inf``, 0.6 for background), summed and divided by the number of sampled RoIs;
  detectron2's box-regression loss.
* Inference: softmax over the K + 1 columns; optionally fused with the frozen CLIP's region scores
  (:func:`fuse_scores`) before detectron2's ``fast_rcnn_inference``.

The vocabulary is set with :meth:`TextClassifierOutputLayers.set_vocabulary` (see
:func:`densevlm_d2.modeling.open_vocab.set_vocabulary`): the embeddings are not part of the
checkpoint, so a trained detector runs with any vocabulary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, cat
from detectron2.modeling.roi_heads.fast_rcnn import (
    FastRCNNOutputLayers,
    _log_classification_stats,
    fast_rcnn_inference,
)
from torch import nn

__all__ = ["TextClassifierOutputLayers", "fuse_scores"]


def fuse_scores(
    det_probs: torch.Tensor,
    clip_probs: torch.Tensor,
    novel: torch.Tensor,
    clip_weight_base: float,
    clip_weight_novel: float,
) -> torch.Tensor:
    """F-ViT's test-time fusion of (R, K + 1) probabilities (background last): base columns (and
    background) ``det^(1 - w_base) * clip^w_base``, novel columns ``det^(1 - w_novel) *
    clip^w_novel`` (published: alpha and beta); no renormalisation. ``novel``: (K + 1,) bool."""
    if det_probs.shape != clip_probs.shape or det_probs.shape[-1] != novel.numel():
        raise ValueError(
            f"shapes disagree: detector {tuple(det_probs.shape)}, CLIP {tuple(clip_probs.shape)}, "
            f"novel mask {tuple(novel.shape)}"
        )
    weight = torch.where(novel.to(det_probs.device), clip_weight_novel, clip_weight_base)
    weight = weight.to(det_probs.dtype)
    return det_probs.pow(1 - weight) * clip_probs.pow(weight)


class TextClassifierOutputLayers(FastRCNNOutputLayers):
    """:class:`~detectron2.modeling.roi_heads.FastRCNNOutputLayers` whose classifier is text
    embeddings. ``forward`` returns ``(logits, deltas)``; ``inference`` also accepts ``(logits,
    deltas, clip_logits)`` and then fuses the probabilities."""

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        embed_dim: int,
        logit_scale: float = 50.0,
        learn_logit_scale: bool = True,
        background_weight: float = 0.6,
        clip_weight_base: float = 0.1,
        clip_weight_novel: float = 0.8,
        **kwargs,
    ):
        kwargs["cls_agnostic_bbox_reg"] = True
        super().__init__(input_shape, **kwargs)
        width = input_shape.channels * (input_shape.width or 1) * (input_shape.height or 1)
        del self.cls_score  # replaced by the text embeddings
        self.cls_fc = nn.Linear(width, embed_dim)
        self.reg_fc = nn.Linear(width, width)
        self.bbox_pred = nn.Linear(width, 4)
        for layer in (self.cls_fc, self.reg_fc):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.bbox_pred.bias)
        t = torch.tensor(float(logit_scale))
        if learn_logit_scale:
            self.logit_scale = nn.Parameter(t)
        else:
            self.register_buffer("logit_scale", t, persistent=False)
        self.embed_dim = embed_dim
        self.background_weight = background_weight
        self.clip_weight_base, self.clip_weight_novel = clip_weight_base, clip_weight_novel
        # set by set_vocabulary(); not saved with the weights
        self.register_buffer("class_embeddings", torch.zeros(0, embed_dim), persistent=False)
        self.register_buffer("class_weights", torch.zeros(0), persistent=False)
        self.register_buffer("novel", torch.zeros(0, dtype=torch.bool), persistent=False)
        self.class_names: list[str] = []

    @classmethod
    def from_config(cls, cfg, input_shape):
        """Everything but ``embed_dim``, the CLIP's embedding size, which
        :class:`~densevlm_d2.modeling.OpenVocabROIHeads` takes from the backbone's ``clip_dense``
        output."""
        ret = super().from_config(cfg, input_shape)
        c = cfg.MODEL.TEXT_CLASSIFIER
        ret.update(
            logit_scale=c.LOGIT_SCALE,
            learn_logit_scale=c.LEARN_LOGIT_SCALE,
            background_weight=c.BACKGROUND_WEIGHT,
            clip_weight_base=c.SCORE_FUSION.CLIP_WEIGHT_BASE,
            clip_weight_novel=c.SCORE_FUSION.CLIP_WEIGHT_NOVEL,
        )
        return ret

    # -- vocabulary --------------------------------------------------------------------------------
    def set_vocabulary(
        self,
        names: list[str],
        embeddings: torch.Tensor,
        background: torch.Tensor,
        novel: list[str] = (),
    ) -> None:
        """``embeddings``: (K, D) for ``names``; ``background``: (D,); ``novel``: names that get
        zero training weight and the novel fusion exponent."""
        names = list(names)
        if embeddings.shape != (len(names), self.embed_dim):
            raise ValueError(
                f"class embeddings have shape {tuple(embeddings.shape)}; expected "
                f"({len(names)}, {self.embed_dim}) for {len(names)} names"
            )
        unknown = sorted(set(novel) - set(names))
        if unknown:
            raise ValueError(f"novel classes {unknown} are not in the vocabulary")
        device = self.cls_fc.weight.device
        emb = torch.cat([embeddings.float(), background.float().reshape(1, -1)]).to(device)
        self.class_embeddings = F.normalize(emb, dim=-1)
        novel = set(novel)
        is_novel = torch.tensor([n in novel for n in names] + [False], device=device)
        weights = torch.where(is_novel, 0.0, 1.0)
        weights[-1] = self.background_weight
        self.novel, self.class_weights = is_novel, weights
        self.class_names = names
        self.num_classes = len(names)

    def _check_vocabulary(self) -> None:
        if self.class_embeddings.numel() == 0:
            raise RuntimeError(
                "the text classifier has no vocabulary: call densevlm_d2.set_vocabulary(model, "
                "class_names), or set MODEL.TEXT_CLASSIFIER.CLASS_NAMES (densevlm_d2's "
                "Trainer.build_model does it from the datasets when their files are on disk)"
            )

    # -- forward, losses, inference ----------------------------------------------------------------
    def forward(self, x: torch.Tensor):
        self._check_vocabulary()
        x = x.flatten(1)
        embedding = F.normalize(F.relu(self.cls_fc(x)), dim=-1)
        logits = embedding @ self.class_embeddings.to(embedding.dtype).T * self.logit_scale
        deltas = self.bbox_pred(F.relu(self.reg_fc(x)))
        return logits, deltas

    def losses(self, predictions, proposals):
        logits, deltas = predictions[:2]
        gt_classes = (
            cat([p.gt_classes for p in proposals], dim=0) if len(proposals) else torch.empty(0)
        )
        _log_classification_stats(logits, gt_classes)
        weights = self.class_weights.to(logits.dtype)
        # published: zero-weight (novel) classes never compete in training
        logits = logits.masked_fill(weights < 1e-5, float("-inf"))
        loss_cls = F.cross_entropy(
            logits.float(), gt_classes, weight=weights.float(), reduction="sum"
        )
        loss_cls = loss_cls / max(gt_classes.numel(), 1)
        if len(proposals):
            proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
            gt_boxes = cat(
                [(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals]
            )
        else:
            proposal_boxes = gt_boxes = torch.empty((0, 4), device=deltas.device)
        return {
            "loss_cls": loss_cls * self.loss_weight.get("loss_cls", 1.0),
            "loss_box_reg": self.box_reg_loss(proposal_boxes, gt_boxes, deltas, gt_classes)
            * self.loss_weight.get("loss_box_reg", 1.0),
        }

    def predict_probs(self, predictions, proposals):
        logits = predictions[0]
        probs = F.softmax(logits.float(), dim=-1)
        if len(predictions) > 2 and predictions[2] is not None:
            clip_probs = F.softmax(predictions[2].float(), dim=-1)
            probs = fuse_scores(
                probs, clip_probs, self.novel, self.clip_weight_base, self.clip_weight_novel
            )
        return probs.split([len(p) for p in proposals], dim=0)

    def inference(self, predictions, proposals):
        boxes = self.predict_boxes(predictions[:2], proposals)
        scores = self.predict_probs(predictions, proposals)
        return fast_rcnn_inference(
            boxes,
            scores,
            [x.image_size for x in proposals],
            self.test_score_thresh,
            self.test_nms_thresh,
            self.test_topk_per_image,
        )
