"""densevlm_d2.compat: detectron2 0.6 imports against today's libraries; the fixes are inert when
not needed."""

from __future__ import annotations

import importlib

import numpy as np
from PIL import Image

from densevlm_d2 import compat


def test_detectron2_modules_import():
    for name in (
        "detectron2.data.transforms",
        "detectron2.data",
        "detectron2.evaluation",
        "detectron2.engine",
        "detectron2.model_zoo",
    ):
        importlib.import_module(name)
    applied = compat.apply()
    if (
        "PIL.Image.LINEAR" in applied
    ):  # added only where the installed detectron2 uses it (0.6, not main)
        assert Image.LINEAR == Image.BILINEAR
    if "numpy.float" in applied:
        assert np.zeros(2, dtype=np.float).dtype == np.float64
    import pkg_resources

    assert pkg_resources.resource_filename("detectron2.model_zoo", "model_zoo.py").endswith(
        "model_zoo.py"
    )


def test_idempotent(monkeypatch):
    first = compat.apply()
    assert compat.apply() == first
    monkeypatch.setattr(compat, "_applied", None)
    assert compat.apply() == []  # everything is present now: nothing is added a second time


def test_inert_when_detectron2_does_not_use_the_names(monkeypatch):
    """As with detectron2 main: a source that no longer uses Image.LINEAR / np.int gets nothing
    added."""
    monkeypatch.setattr(compat, "_applied", None)
    monkeypatch.setattr(compat, "_detectron2_source", lambda relpath: "")
    monkeypatch.delattr(Image, "LINEAR", raising=False)
    for name in ("int", "float", "str"):
        monkeypatch.delattr(np, name, raising=False)
    assert compat.apply() == []
    assert not hasattr(Image, "LINEAR") and "int" not in vars(np)
