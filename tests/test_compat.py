"""densevlm_d2.compat: detectron2 0.6 imports against today's libraries; each fix is added only
where the library lacks the name."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

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
    if "PIL.Image.LINEAR" in applied:  # added only where Pillow lacks it (>= 10)
        assert Image.LINEAR == Image.BILINEAR
    if "numpy.float" in applied:
        assert np.zeros(2, dtype=np.float).dtype == np.float64
    import pkg_resources

    assert pkg_resources.resource_filename("detectron2.model_zoo", "model_zoo.py").endswith(
        "model_zoo.py"
    )


def test_pytest_syspath_prepend_beside_pkg_resources(monkeypatch, tmp_path):
    """pytest (and others) call pkg_resources.fixup_namespace_packages whenever a pkg_resources is
    imported: the shim must answer it too."""
    import pkg_resources  # noqa: F401  (the shim, where no real one exists)

    monkeypatch.syspath_prepend(str(tmp_path))
    assert sys.path[0] == str(tmp_path)


def test_idempotent(monkeypatch):
    first = compat.apply()
    assert compat.apply() == first
    monkeypatch.setattr(compat, "_applied", None)
    assert compat.apply() == []  # everything is present now: nothing is added a second time


def test_only_missing_names_are_added(monkeypatch):
    """Each fix tests for the name itself: where the library still has it, nothing is added."""
    monkeypatch.setattr(compat, "_applied", None)
    monkeypatch.setattr(Image, "LINEAR", Image.BILINEAR, raising=False)
    for name, value in (("int", int), ("float", float), ("str", str)):
        monkeypatch.setattr(np, name, value, raising=False)
    assert compat.apply() == []
    monkeypatch.setattr(compat, "_applied", None)
    monkeypatch.delattr(Image, "LINEAR")
    monkeypatch.delattr(np, "str")
    assert compat.apply() == ["PIL.Image.LINEAR", "numpy.str"]
    assert Image.LINEAR == Image.BILINEAR and np.str is str


def test_pkg_resources_shim_is_lazy_and_last():
    """Nothing named pkg_resources exists until something imports it, and a real one would win
    (the shim sits last on sys.meta_path)."""
    code = (
        "import sys, densevlm_d2; assert 'pkg_resources' not in sys.modules; "
        "import importlib.util; real = importlib.util.find_spec('pkg_resources'); "
        "import pkg_resources; "
        "assert type(sys.meta_path[-1]).__name__ == '_PkgResourcesShim' or real is not None; "
        "print(pkg_resources.resource_filename('densevlm_d2', 'compat.py'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith(os.path.join("densevlm_d2", "compat.py"))
