"""What the engine needs from a meta-architecture besides its forward pass: its data.

Each meta-architecture of this project is a :class:`DataContract`: it says how its training and
test data are loaded (mapper, resizing, batching) and what to do before it is evaluated on a
dataset. The trainer asks :func:`data_contract` and never tests model classes. detectron2's own
detectors (``GeneralizedRCNN``, ``ProposalNetwork``, e.g. F-ViT) get :class:`DetectorData`.
"""

from __future__ import annotations

from detectron2.data import (
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN, ProposalNetwork
from torch import nn

from ...data.mappers import build_detection_mapper
from ...data.vocabulary import dataset_vocabulary
from ..roi_heads import OpenVocabROIHeads, set_vocabulary

__all__ = [
    "DataContract",
    "DetectorData",
    "data_contract",
    "set_detector_vocabulary",
    "training_dicts",
]


def training_dicts(cfg) -> list[dict]:
    """The records of ``DATASETS.TRAIN`` (images without annotations kept)."""
    if not cfg.DATASETS.TRAIN:
        raise ValueError(f"{cfg.MODEL.META_ARCHITECTURE} trains on DATASETS.TRAIN: none is given")
    return get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=False)


class DataContract:
    """The data a meta-architecture trains and is evaluated on (see the module docstring). All
    methods are class methods: the trainer calls them before and beside the model."""

    @classmethod
    def build_train_loader(cls, cfg):
        raise ValueError(f"{cls.__name__} does not train (it only evaluates)")

    @classmethod
    def build_test_loader(cls, cfg, dataset_name: str):
        raise NotImplementedError

    @classmethod
    def before_evaluation(cls, cfg, model: nn.Module, dataset_name: str) -> None:
        """Called before the model is evaluated on ``dataset_name`` (default: nothing; a model that
        reads each input's vocabulary needs nothing)."""


class DetectorData(DataContract):
    """detectron2's R-CNN detectors: detection records with large-scale jitter
    (``INPUT.LSJ``), detectron2's loaders; an open-vocabulary detector gets the vocabulary of
    each dataset it is evaluated on (its ROI heads cannot read one per input)."""

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=build_detection_mapper(cfg, True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name: str):
        return build_detection_test_loader(
            cfg, dataset_name, mapper=build_detection_mapper(cfg, False)
        )

    @classmethod
    def before_evaluation(cls, cfg, model: nn.Module, dataset_name: str) -> None:
        set_detector_vocabulary(cfg, model, dataset_name)


def set_detector_vocabulary(cfg, model: nn.Module, dataset_name: str | None = None) -> None:
    """Give a detector's text classifiers ``MODEL.TEXT_CLASSIFIER.CLASS_NAMES`` (with
    ``NOVEL_CLASSES``) or the vocabulary of ``dataset_name`` (default: the first training dataset,
    else the first test dataset). A no-op for a model without open-vocabulary ROI heads."""
    if not any(isinstance(m, OpenVocabROIHeads) for m in model.modules()):
        return
    c = cfg.MODEL.TEXT_CLASSIFIER
    if c.CLASS_NAMES:
        set_vocabulary(model, list(c.CLASS_NAMES), list(c.NOVEL_CLASSES))
        return
    if dataset_name is None:
        datasets = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
        if not datasets:
            raise ValueError("no vocabulary: set MODEL.TEXT_CLASSIFIER.CLASS_NAMES or a dataset")
        dataset_name = datasets[0]
    vocabulary = dataset_vocabulary(dataset_name)
    set_vocabulary(model, vocabulary, list(c.NOVEL_CLASSES) or list(vocabulary.novel))


def data_contract(cfg) -> type[DataContract]:
    """The :class:`DataContract` of ``MODEL.META_ARCHITECTURE``."""
    arch = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
    if isinstance(arch, type) and issubclass(arch, DataContract):
        return arch
    if isinstance(arch, type) and issubclass(arch, GeneralizedRCNN | ProposalNetwork):
        return DetectorData
    raise ValueError(
        f"{cfg.MODEL.META_ARCHITECTURE} is neither one of densevlm_d2's meta-architectures nor a "
        "detectron2 R-CNN: no data loaders are known for it"
    )
