"""The vocabularies of registered datasets: the one place where a dataset's class names are read.

Every registration function of this project stores a :class:`~densevlm_d2.clip.Vocabulary` as the
dataset's metadata ``vocabulary`` (COCO-format files, whose classes are known once the json is read,
store it when they are loaded). :func:`dataset_vocabulary` returns it, loading the dataset when that
is what names its classes, and reads detectron2's own ``thing_classes`` / ``stuff_classes`` for
datasets registered by other code. Models, evaluators and tools take their classes from here (or
from a user's list through :meth:`Vocabulary.from_names`), never from other metadata keys.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..clip.vocabulary import Vocabulary, VocabularyError, warn_repeats

__all__ = [
    "VOCABULARY_DIR",
    "dataset_vocabulary",
    "register_vocabulary",
    "shipped_vocabulary",
    "training_vocabulary",
]

#: the class-list files that ship with the package (one format: :mod:`densevlm_d2.clip.vocabulary`)
VOCABULARY_DIR = Path(__file__).resolve().parent / "vocabularies"
_warned: set[str] = set()  # vocabularies whose repeated names were reported


def shipped_vocabulary(key: str, source: str | None = None) -> Vocabulary:
    """A class-list file of :data:`VOCABULARY_DIR` by its stem (``"ade20k_150"``)."""
    return Vocabulary.from_file(VOCABULARY_DIR / f"{key}.json", source=source)


def register_vocabulary(name: str, classes: str | os.PathLike | Vocabulary | Sequence[str]) -> None:
    """Register a vocabulary without a dataset under ``name`` (a class-list file, a
    :class:`Vocabulary` or a list of names); a second call with the same classes is a no-op."""
    if isinstance(classes, str | os.PathLike):
        vocabulary = Vocabulary.from_file(classes, source=name)
    else:
        vocabulary = Vocabulary.from_names(classes, source=name)
        if vocabulary.source != name:
            vocabulary = vocabulary.replace(source=name)
    MetadataCatalog.get(name).set(vocabulary=vocabulary)


def _from_detectron2_metadata(name: str) -> Vocabulary | None:
    """The vocabulary of a dataset registered by other code (detectron2's builtin datasets,
    ``register_coco_instances``, ...): its semantic-segmentation ``stuff_classes`` or its
    ``thing_classes``."""
    meta = MetadataCatalog.get(name)
    if meta.get("evaluator_type", None) == "sem_seg" and meta.get("stuff_classes", None):
        return Vocabulary(names=tuple(meta.stuff_classes), source=name)
    if meta.get("thing_classes", None):
        novel = tuple(meta.get("novel_classes", ()))
        return Vocabulary(names=tuple(meta.thing_classes), novel=novel, source=name)
    return None


def dataset_vocabulary(name: str) -> Vocabulary:
    """The :class:`Vocabulary` of a registered dataset or vocabulary (see the module docstring); a
    clear error naming ``name`` when it has none."""
    if not isinstance(name, str):
        raise VocabularyError(f"a dataset or vocabulary name is a string, got {name!r}")
    meta = MetadataCatalog.get(name)
    vocabulary = meta.get("vocabulary", None) or _from_detectron2_metadata(name)
    if vocabulary is None and name in DatasetCatalog.list():
        DatasetCatalog.get(name)  # COCO-format files name their classes when they are read
        vocabulary = meta.get("vocabulary", None) or _from_detectron2_metadata(name)
    if vocabulary is not None and name not in _warned:
        _warned.add(name)
        warn_repeats(vocabulary.names, f"vocabulary of {name}")
    if vocabulary is None:
        known = "a registered dataset" if name in DatasetCatalog.list() else "not registered"
        raise VocabularyError(
            f"{name!r} has no class names ({known}): register it with one of densevlm_d2's "
            "register_* functions, or register a class list with "
            "densevlm_d2.data.register_vocabulary (docs/own_data.md)"
        )
    return vocabulary


def training_vocabulary(datasets: Sequence[str]) -> Vocabulary | None:
    """The vocabulary shared by the training datasets (None without any); a clear error when they
    differ."""
    vocabularies = [dataset_vocabulary(name) for name in datasets]
    if not vocabularies:
        return None
    first = vocabularies[0]
    for name, other in zip(datasets[1:], vocabularies[1:], strict=True):
        if other.names != first.names:
            raise VocabularyError(
                f"the training datasets {datasets[0]!r} and {name!r} have different class lists "
                f"({len(first)} and {len(other)} classes): a model trains on one vocabulary"
            )
    return first
