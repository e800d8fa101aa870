"""Run the detectron2 0.6 release against today's numpy, Pillow and setuptools.

detectron2's last release (0.6, 2021), and the PyPI archive of it that ``tools/install_extras.py``
falls back to, use names that newer libraries removed. Each fix adds a missing name only when the
installed detectron2's source uses it, so with detectron2 main (which fixed the Pillow and numpy
ones) or with older libraries nothing changes. It is applied on ``import densevlm_d2``, which must
therefore come before the first import of ``detectron2.data``.

* Pillow >= 10 removed ``Image.LINEAR`` (an alias of ``BILINEAR``); detectron2 0.6 uses it as a
  default argument in ``data/transforms/transform.py``, so that import fails.
* numpy >= 1.24 removed the aliases ``np.int``, ``np.float``, ``np.str`` (the builtins), used by
  detectron2 0.6 in ``data/build.py`` (class histogram), ``evaluation/sem_seg_evaluation.py`` and
  ``data/datasets/pascal_voc.py``.
* setuptools >= 82 no longer ships ``pkg_resources``, which ``detectron2.model_zoo`` imports (0.6
  and main) only to call ``resource_filename``.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
import re
import sys
import types
from pathlib import Path

__all__ = ["apply"]

_applied: list[str] | None = None
# detectron2 files that use each removed name, per the 0.6 release.
_NUMPY_USERS = ("data/build.py", "evaluation/sem_seg_evaluation.py", "data/datasets/pascal_voc.py")


def _detectron2_source(relpath: str) -> str:
    spec = importlib.util.find_spec("detectron2")
    if spec is None or not spec.submodule_search_locations:
        return ""
    path = Path(next(iter(spec.submodule_search_locations))) / relpath
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def _pillow(applied: list[str]) -> None:
    from PIL import Image

    if not hasattr(Image, "LINEAR") and "Image.LINEAR" in _detectron2_source(
        "data/transforms/transform.py"
    ):
        Image.LINEAR = Image.BILINEAR
        applied.append("PIL.Image.LINEAR")


def _numpy(applied: list[str]) -> None:
    import numpy as np

    source = "".join(_detectron2_source(p) for p in _NUMPY_USERS)
    for name, value in (("int", int), ("float", float), ("str", str)):
        # vars(), not hasattr(): numpy's module __getattr__ warns on these names before raising
        if name not in vars(np) and re.search(rf"\bnp\.{name}\b", source):
            setattr(np, name, value)
            applied.append(f"numpy.{name}")


def _resource_filename(package: str, resource: str) -> str:
    return os.fspath(importlib.resources.files(package).joinpath(resource))


def _pkg_resources(applied: list[str]) -> None:
    if "pkg_resources" in sys.modules or importlib.util.find_spec("pkg_resources") is not None:
        return
    if "pkg_resources" in _detectron2_source("model_zoo/model_zoo.py"):
        shim = types.ModuleType("pkg_resources")
        shim.__doc__ = "densevlm_d2.compat: resource_filename only, for detectron2.model_zoo"
        shim.resource_filename = _resource_filename
        sys.modules["pkg_resources"] = shim
        applied.append("pkg_resources.resource_filename")


def apply() -> list[str]:
    """Add the missing names the installed detectron2 needs; idempotent. Returns what was added."""
    global _applied
    if _applied is None:
        _applied = []
        _pillow(_applied)
        _numpy(_applied)
        _pkg_resources(_applied)
    return list(_applied)
