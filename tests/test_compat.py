"""densevlm_d2.compat: detectron2 0.6 imports against today's libraries; the fixes are inert when not needed."""

from __future__ import annotations

import importlib

import numpy as np
from PIL import Image

from densevlm_d2 import compat


def test_detectron2_modules_import():
    for name in ("detectron2.data.transforms", "detectron2.data", "detectron2.evaluation", "detectron2.engine",
                 "detectron2.model_zoo"):
        importlib.import_module(name)
    assert Image.LINEAR == Image.BILINEAR
    assert np.zeros(2, dtype=np.float).dtype == np.float64  # as detectron2 0.6's sem_seg_evaluation uses it
    import pkg_resources

    assert pkg_resources.resource_filename("detectron2.model_zoo", "model_zoo.py").endswith("model_zoo.py")


def test_inert_when_names_exist(monkeypatch):
    compat.apply()
    monkeypatch.setattr(compat, "_applied", [])
    assert compat.apply() == []  # everything is present now: nothing is added a second time
