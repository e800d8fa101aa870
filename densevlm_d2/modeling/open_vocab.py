"""Vocabularies at run time: set an open-vocabulary detector's from class names, at any time; read a
segmentation input's (its own names or its dataset's)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from detectron2.data import MetadataCatalog
from torch import nn

from ..clip.text import TEMPLATES, check_vocabulary
from .backbone.clip_vit import get_clip_backbone
from .roi_heads import OpenVocabROIHeads

__all__ = ["segmentation_vocabulary", "set_vocabulary"]

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


def segmentation_vocabulary(inp: dict) -> tuple[list[str], int | None]:
    """(class names, background index) a segmentation model queries for one input: its
    ``classes`` (and ``background_index``), else its ``dataset_name``'s metadata.

    A dataset with ``query_classes`` (VOC-20b) is queried with them: one output channel per query;
    the evaluator maps the surplus ones (index ``>= surplus_prediction_class``) to the last scored
    class. The background index is then the dataset's only when it is below the surplus index (the
    same class in both lists); a background made of many queries (VOC-20b's 39 Context classes) has
    no single query, so it is None."""
    if "classes" in inp:
        return list(inp["classes"]), inp.get("background_index")
    if "dataset_name" not in inp:
        raise ValueError("an input needs 'classes' or the 'dataset_name' of its vocabulary")
    meta = MetadataCatalog.get(inp["dataset_name"])
    if not hasattr(meta, "stuff_classes"):
        raise ValueError(
            f"dataset {inp['dataset_name']!r} has no 'stuff_classes' metadata: not a "
            "registered semantic-segmentation dataset"
        )
    background = meta.get("background_index", None)
    query_classes = meta.get("query_classes", None)
    if not query_classes:
        return list(meta.stuff_classes), background
    surplus = meta.get("surplus_prediction_class", None)
    if background is not None and (surplus is None or background >= surplus):
        background = None
    return list(query_classes), background
