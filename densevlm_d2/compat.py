"""Run the detectron2 0.6 release against today's numpy, Pillow and setuptools.

detectron2's last release (0.6, 2021) and the PyPI archive of it that ``tools/install_extras.py`` falls back to
use names that newer libraries removed. Official detectron2 main fixes the Pillow and numpy ones itself. Each
fix here only adds a name that is missing, so on an environment that has them (or on detectron2 main) the module
changes nothing. It is applied on ``import densevlm_d2``, which must therefore come before the first import of
``detectron2.data``.

* Pillow >= 10 removed ``Image.LINEAR`` (an alias of ``BILINEAR``); detectron2 0.6 uses it as a default argument
  in ``detectron2/data/transforms/transform.py``, so that import fails.
* numpy >= 1.24 removed the aliases ``np.int``, ``np.float``, ``np.str`` (the builtins), used by detectron2 0.6 in
  ``data/build.py`` (class histogram), ``evaluation/sem_seg_evaluation.py`` and ``data/datasets/pascal_voc.py``.
* setuptools >= 82 no longer ships ``pkg_resources``, which ``detectron2.model_zoo`` imports (0.6 and main) only
  to call ``resource_filename``.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
import sys
import types

__all__ = ["apply"]

_applied: list[str] = []


def _pillow() -> None:
    from PIL import Image

    if not hasattr(Image, "LINEAR"):
        Image.LINEAR = Image.BILINEAR
        _applied.append("PIL.Image.LINEAR")


def _numpy() -> None:
    import numpy as np

    for name, value in (("int", int), ("float", float), ("str", str)):
        # vars(), not hasattr(): numpy's module __getattr__ warns on these names before raising
        if name not in vars(np):
            setattr(np, name, value)
            _applied.append(f"numpy.{name}")


def _resource_filename(package: str, resource: str) -> str:
    return os.fspath(importlib.resources.files(package).joinpath(resource))


def _pkg_resources() -> None:
    if "pkg_resources" not in sys.modules and importlib.util.find_spec("pkg_resources") is None:
        shim = types.ModuleType("pkg_resources")
        shim.__doc__ = "densevlm_d2.compat: resource_filename only, for detectron2.model_zoo"
        shim.resource_filename = _resource_filename
        sys.modules["pkg_resources"] = shim
        _applied.append("pkg_resources.resource_filename")


def apply() -> list[str]:
    """Add the missing names; idempotent. Returns what was added in this process."""
    if not _applied:
        _pillow()
        _numpy()
        _pkg_resources()
        if not _applied:
            _applied.append("")  # nothing needed; remember that we checked
    return [name for name in _applied if name]
