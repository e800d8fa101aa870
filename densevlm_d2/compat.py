"""Run detectron2's last release (0.6, 2021) against today's Pillow, numpy and setuptools.

detectron2 0.6, and the PyPI archive of it that ``tools/install_extras.py`` falls back to, use
names that newer libraries removed. Each fix tests for the missing feature itself and adds only
that; with detectron2 main, which no longer uses the Pillow and numpy names, the additions are
unused aliases. Applied on ``import densevlm_d2``, which therefore has to come before the first
import of ``detectron2.data``, ``engine``, ``modeling`` or ``evaluation`` (the Pillow name is a
default argument there, evaluated at import). This is the one import-order rule of the project;
``ruff.toml`` gives densevlm_d2's imports their own isort section before the third-party ones, so
every module of the repository follows it.

* Pillow >= 10 removed ``Image.LINEAR`` (an alias of ``BILINEAR``), which
  ``detectron2/data/transforms/transform.py`` (0.6) uses as a default argument.
* numpy >= 1.24 removed the aliases ``np.int``, ``np.float``, ``np.str`` of the builtins, which
  detectron2 0.6 uses in ``data/build.py`` (class histogram), ``evaluation/sem_seg_evaluation.py``
  and ``data/datasets/pascal_voc.py``.
* setuptools >= 82 no longer ships ``pkg_resources``, which ``detectron2.model_zoo`` (0.6 and main)
  imports only to call ``resource_filename``. When no real ``pkg_resources`` can be imported, an
  import of it gets a module with that function and a no-op ``fixup_namespace_packages`` (callers
  such as pytest's ``monkeypatch.syspath_prepend`` call it whenever ``pkg_resources`` is in
  ``sys.modules``; PEP 420 namespace packages need no fixing). Nothing is put in ``sys.modules``
  before someone imports it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.resources
import importlib.util
import os
import sys
import types

__all__ = ["apply"]

_applied: list[str] | None = None


def _pillow(applied: list[str]) -> None:
    from PIL import Image

    if not hasattr(Image, "LINEAR"):
        Image.LINEAR = Image.BILINEAR
        applied.append("PIL.Image.LINEAR")


def _numpy(applied: list[str]) -> None:
    import numpy as np

    for name, value in (("int", int), ("float", float), ("str", str)):
        # vars(), not hasattr(): numpy's module __getattr__ warns on these names before raising
        if name not in vars(np):
            setattr(np, name, value)
            applied.append(f"numpy.{name}")


def _resource_filename(package: str, resource: str) -> str:
    return os.fspath(importlib.resources.files(package).joinpath(resource))


def _fixup_namespace_packages(path_item, parent=None) -> None:
    """Nothing to do: namespace packages without pkg_resources are PEP 420 ones."""


class _PkgResourcesShim(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``pkg_resources`` only when no other finder does (it is last on ``sys.meta_path``)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "pkg_resources":
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        module.__doc__ = "densevlm_d2.compat: resource_filename (for detectron2.model_zoo) only"
        module.resource_filename = _resource_filename
        module.fixup_namespace_packages = _fixup_namespace_packages


def _pkg_resources(applied: list[str]) -> None:
    if importlib.util.find_spec("pkg_resources") is None:
        sys.meta_path.append(_PkgResourcesShim())
        applied.append("pkg_resources.resource_filename")


def apply() -> list[str]:
    """Add the missing names; idempotent. Returns what was added."""
    global _applied
    if _applied is None:
        _applied = []
        _pillow(_applied)
        _numpy(_applied)
        _pkg_resources(_applied)
    return list(_applied)
