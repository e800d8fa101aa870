"""Writing a dataset in the COCO panoptic on-disk format: the one writer of that format.

``with PanopticWriter(json_file, panoptic_dir, categories, image_dir) as w: w.add(...)`` writes,
per image, the JPEG (when given) and the panoptic PNG whose RGB colour encodes the segment id
(panopticapi's ``id2rgb``), and at the end the json with ``images``, ``annotations``
(``segments_info`` with ``id``, ``category_id``, ``iscrowd``, ``bbox`` = [x, y, w, h] of the
segment's pixels, ``area``) and ``categories``. The folders are written as a whole
(:func:`~densevlm_d2.utils.atomic_folder`) and the json last, so an interrupted run never leaves a
dataset that loads half-written. The ADE20K panoptic preparation, the CPU demo's world and the
tests' datasets are written with it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from panopticapi.utils import id2rgb
from PIL import Image

from ...utils.files import atomic_folder, atomic_write
from .panoptic import segment_record

__all__ = ["PanopticWriter"]


class PanopticWriter:
    """See the module docstring. ``categories``: ``{"id", "name", "isthing", ...}`` dicts, written
    as they are; ``image_dir``: where :meth:`add` writes images (None: images are not written)."""

    def __init__(
        self,
        json_file: str | os.PathLike,
        panoptic_dir: str | os.PathLike,
        categories: Sequence[dict],
        image_dir: str | os.PathLike | None = None,
        image_quality: int = 95,
    ):
        self.json_file = Path(json_file)
        self.panoptic_dir = Path(panoptic_dir)
        self.image_dir = Path(image_dir) if image_dir is not None else None
        self.categories = list(categories)
        self.image_quality = image_quality
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self._stack: contextlib.ExitStack | None = None
        self._png_dir = self._img_dir = None

    def __enter__(self) -> PanopticWriter:
        self._stack = contextlib.ExitStack().__enter__()
        self._png_dir = self._stack.enter_context(atomic_folder(self.panoptic_dir))
        if self.image_dir is not None:
            self._img_dir = self._stack.enter_context(atomic_folder(self.image_dir))
        return self

    def __exit__(self, *exc) -> bool:
        stack, self._stack = self._stack, None
        if exc[0] is not None:
            return stack.__exit__(*exc)
        stack.__exit__(None, None, None)  # the folders are in place: now the json
        data = {
            "images": self.images,
            "annotations": self.annotations,
            "categories": self.categories,
        }
        with atomic_write(self.json_file, binary=False) as f:
            json.dump(data, f)
        return False

    def add(
        self,
        image_id,
        stem: str,
        segment_ids: np.ndarray,
        segments: Sequence[tuple[int, int, int] | dict],
        image: np.ndarray | None = None,
        size: tuple[int, int] | None = None,
    ) -> dict:
        """One image: its (H, W) segment-id map, its segments as ``(segment id, category id,
        iscrowd)`` (the record is made from the map's pixels) or as ``segments_info`` records
        (written as they are), and its HxWx3 uint8 RGB ``image`` (written as ``<stem>.jpg``
        when the writer has an image folder). ``size`` = (height, width) of an image not given
        (default: the map's). Returns the annotation entry."""
        if self._stack is None:
            raise RuntimeError("use the PanopticWriter in a with block")
        height, width = size or segment_ids.shape
        records = [
            s if isinstance(s, dict) else segment_record(s[0], s[1], segment_ids == s[0], s[2])
            for s in segments
        ]
        if image is not None:
            if self._img_dir is None:
                raise ValueError("this PanopticWriter has no image folder (image_dir)")
            Image.fromarray(image).save(self._img_dir / f"{stem}.jpg", quality=self.image_quality)
            height, width = image.shape[:2]
        Image.fromarray(id2rgb(segment_ids)).save(self._png_dir / f"{stem}.png")
        self.images.append(
            {"id": image_id, "file_name": f"{stem}.jpg", "height": int(height), "width": int(width)}
        )
        annotation = {"image_id": image_id, "file_name": f"{stem}.png", "segments_info": records}
        self.annotations.append(annotation)
        return annotation
