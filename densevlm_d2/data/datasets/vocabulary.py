"""Class vocabularies that exist without a dataset (registered as metadata only)."""

from __future__ import annotations

import json
from pathlib import Path

from detectron2.data import MetadataCatalog

__all__ = ["VOCABULARY_DIR", "register_vocabulary", "vocabulary"]

VOCABULARY_DIR = Path(__file__).resolve().parents[1] / "vocabularies"


def register_vocabulary(name: str, json_file: str | Path) -> None:
    """Register ``[{"name", "isthing"}, ...]`` as ``MetadataCatalog.get(name).classes`` /
    ``.class_is_thing``; a second call is a no-op."""
    meta = MetadataCatalog.get(name)
    if hasattr(meta, "classes"):
        return
    entries = json.loads(Path(json_file).read_text())
    meta.set(
        classes=[e["name"] for e in entries],
        class_is_thing=[bool(e["isthing"]) for e in entries],
        vocabulary_file=str(json_file),
    )


def vocabulary(name: str) -> tuple[list[str], list[bool]]:
    """(class names, is-thing flags) of a registered vocabulary or dataset."""
    meta = MetadataCatalog.get(name)
    if not hasattr(meta, "classes") or not hasattr(meta, "class_is_thing"):
        raise ValueError(
            f"{name!r} is not a registered vocabulary or dataset with 'classes' and "
            "'class_is_thing' metadata"
        )
    return list(meta.classes), [bool(t) for t in meta.class_is_thing]
