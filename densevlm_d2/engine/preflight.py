"""The cheap checks of a run, before any model is built or any class name embedded.

Building a full-size model and embedding a vocabulary takes minutes on a CPU; a run that then stops
because a dataset or a weight file is missing wastes them. :func:`check_run` looks first at what
costs nothing: the datasets the run reads are on disk (their registered loaders' own layout
checks), the weight files it names exist (local files; hub references and model-zoo names are
resolved when loaded, by the hub), and every CLIP of the model will get weights (or
``MODEL.CLIP.RANDOM_INIT`` says that random ones are wanted). The tools call it first; the
:class:`~densevlm_d2.engine.Trainer` also builds its training data before its model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from detectron2.data import DatasetCatalog

from ..clip.hub import check_weights_reference, check_zoo_model
from ..clip.io import WeightFileNotFoundError

__all__ = ["check_datasets", "check_run", "check_weights"]

#: the backbones that are a CLIP built from MODEL.CLIP (every model of this project builds its
#: backbone from MODEL.BACKBONE.NAME; another backbone, e.g. a test's stand-in, has no CLIP)
_CLIP_BACKBONES = ("CLIPViTBackbone", "build_clip_fpn_backbone")


def check_datasets(names: Sequence[str]) -> None:
    """Load each registered dataset's records (which checks its files, naming the missing one and
    the expected layout); an unregistered name is detectron2's ``KeyError`` listing the
    registered ones."""
    for name in names:
        DatasetCatalog.get(name)


def _resuming(cfg, resume: bool) -> bool:
    return resume and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))


def check_weights(
    cfg,
    *,
    resume: bool = False,
    weights: Sequence[str] | None = None,
    weights_option: str = "MODEL.WEIGHTS",
) -> None:
    """The weight references of ``cfg`` (and ``weights``, a tool's own list standing in for
    ``MODEL.WEIGHTS``, given as ``weights_option``) name files that exist, and every CLIP of the
    model gets weights."""
    arch = cfg.MODEL.META_ARCHITECTURE
    resuming = _resuming(cfg, resume)
    model_weights = list(weights) if weights is not None else [cfg.MODEL.WEIGHTS]
    refs = [("CLIP (MODEL.CLIP.CHECKPOINT)", cfg.MODEL.CLIP.CHECKPOINT)]
    if not resuming:
        refs += [(f"model weights ({weights_option})", w) for w in model_weights]
    if arch == "DenseVLM":
        teacher = cfg.MODEL.DENSEVLM.TEACHER.CHECKPOINT
        refs.append(("teacher CLIP (MODEL.DENSEVLM.TEACHER.CHECKPOINT)", teacher))
    for role, ref in refs:
        if ref:
            try:
                check_weights_reference(ref)
            except FileNotFoundError as e:
                raise WeightFileNotFoundError(role, ref, str(e)) from None
    _check_architectures(cfg, model_weights if not resuming else [])
    if cfg.MODEL.CLIP.RANDOM_INIT:
        return
    uses_clip = cfg.MODEL.BACKBONE.NAME in _CLIP_BACKBONES
    missing = []
    if uses_clip and not (cfg.MODEL.CLIP.CHECKPOINT or resuming or all(model_weights)):
        missing.append(f"the model's CLIP (MODEL.CLIP.CHECKPOINT, or a CLIP or model file as "
                       f"{weights_option})")  # fmt: skip
    if arch == "DenseVLM" and not cfg.MODEL.DENSEVLM.TEACHER.CHECKPOINT:
        missing.append("its teacher (MODEL.DENSEVLM.TEACHER.CHECKPOINT)")
    if uses_clip and arch == "CLIPSelf" and not cfg.MODEL.CLIP.CHECKPOINT:
        missing.append("its teacher (the student's MODEL.CLIP.CHECKPOINT, copied when built)")
    if missing:
        raise ValueError(
            f"{len(missing)} CLIP model(s) would have no weights, so results would be those of "
            f"random weights: {'; '.join(missing)}. Give them weights, or set "
            "MODEL.CLIP.RANDOM_INIT True to run with random weights on purpose (tests, smoke "
            "runs, speed measurements)."
        )


def _check_architectures(cfg, model_weights: Sequence[str]) -> None:
    """Model-zoo names are of the architecture their CLIP is built as."""
    if cfg.MODEL.BACKBONE.NAME not in _CLIP_BACKBONES:
        return
    name = cfg.MODEL.CLIP.MODEL_NAME
    for ref in [cfg.MODEL.CLIP.CHECKPOINT, *model_weights]:
        check_zoo_model(ref, name, "MODEL.CLIP.MODEL_NAME")
    if cfg.MODEL.META_ARCHITECTURE == "DenseVLM":
        teacher = cfg.MODEL.DENSEVLM.TEACHER
        check_zoo_model(teacher.CHECKPOINT, teacher.MODEL_NAME, "MODEL.DENSEVLM.TEACHER.MODEL_NAME")


def check_run(cfg, *, resume: bool = False, weights: Sequence[str] | None = None) -> None:
    """Everything cheap about a run of ``cfg``, before its model is built: the weights
    (:func:`check_weights`) and the evaluation datasets it will read (``DATASETS.TEST``: a
    training run is evaluated at its end too, by detectron2's ``EvalHook``). The training datasets
    are loaded by :class:`~densevlm_d2.engine.Trainer` before it builds the model."""
    check_weights(cfg, resume=resume, weights=weights)
    check_datasets(cfg.DATASETS.TEST)
