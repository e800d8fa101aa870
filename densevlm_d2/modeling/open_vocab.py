"""Set the vocabulary of an open-vocabulary detector from class names, at any time."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..clip.text import TEMPLATES, check_vocabulary
from .backbone.clip_vit import get_clip_backbone
from .roi_heads import OpenVocabROIHeads

__all__ = ["set_vocabulary"]

BACKGROUND = "background"


@torch.no_grad()
def set_vocabulary(
    model: nn.Module,
    class_names: Sequence[str],
    novel_classes: Sequence[str] | None = None,
    templates: Sequence[str] = TEMPLATES,
) -> torch.Tensor:
    """Encode ``class_names`` (and "background") with the model's own CLIP text tower and give them
    to every text classifier in ``model``. ``novel_classes``: names trained with zero weight and
    fused with the novel exponent at test time; default: the names not in the current vocabulary's
    base classes (all names for a model without one). Returns the (K, D) class embeddings."""
    heads = [m for m in model.modules() if isinstance(m, OpenVocabROIHeads)]
    if not heads:
        raise ValueError("the model has no open-vocabulary ROI heads (MODEL.ROI_HEADS.NAME)")
    names = check_vocabulary(class_names)
    if len(set(names)) != len(names):
        raise ValueError(f"a detector's vocabulary must be names without repeats, got {names}")
    if novel_classes is None:
        predictor = heads[0].box_predictor
        base = {
            n
            for n, novel in zip(predictor.class_names, predictor.novel.tolist()[:-1], strict=True)
            if not novel
        }
        novel_classes = [n for n in names if n not in base]
    clip = get_clip_backbone(model)
    embeddings = clip.class_embeddings(names, templates=templates)
    background = clip.class_embeddings([BACKGROUND], templates=templates)[0]
    for head in heads:
        head.set_vocabulary(names, embeddings, background, list(novel_classes))
    return embeddings
