"""Validate a registered dataset completely before a long run (``tools/check_dataset.py``).

Loading the dataset's json checks it as a whole (unique image and segment ids, known categories,
finite boxes); then every record is read the way the data loaders read it: each image is decoded,
and for panoptic datasets the PNG is decoded and checked against the json
(:func:`~densevlm_d2.data.datasets.panoptic.read_panoptic_pair`); boxes of box datasets must be
finite with positive size, and their instance masks (polygons or RLE, as COCO and LVIS store them)
well formed at the image's size; a semantic-segmentation label file must decode, have its image's
size and hold only class indices and the ignore label. Every problem is collected (not only the
first), with the file, the image id and the segment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..clip.preprocess import load_rgb
from .datasets.panoptic import DatasetFormatError, read_panoptic_pair
from .datasets.sem_seg import read_sem_seg_label
from .vocabulary import dataset_vocabulary

__all__ = ["DatasetReport", "check_dataset"]


@dataclass
class DatasetReport:
    name: str
    images: int = 0
    segments: int = 0
    boxes: int = 0
    empty_segments_skipped: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        lines = [
            f"{self.name}: {self.images} images, {self.segments} segments, {self.boxes} boxes "
            f"checked; {self.empty_segments_skipped} stuff segments without pixels (skipped "
            f"by the evaluation); {len(self.problems)} problem(s)"
        ]
        lines += [f"  - {p}" for p in self.problems[:50]]
        if len(self.problems) > 50:
            lines.append(f"  ... and {len(self.problems) - 50} more")
        return "\n".join(lines)


def _check_boxes(record: dict, report: DatasetReport) -> None:
    for k, ann in enumerate(record.get("annotations", [])):
        report.boxes += 1
        box = ann.get("bbox")
        ok = box is not None and len(box) == 4 and all(math.isfinite(float(v)) for v in box)
        if not ok or box[2] <= 0 or box[3] <= 0:
            report.problems.append(
                f"{record['file_name']} (image id {record.get('image_id')!r}), box {k}: "
                f"{box!r} is not 4 finite numbers with positive width and height"
            )


def _check_masks(record: dict, report: DatasetReport) -> None:
    """Instance masks (COCO / LVIS ``segmentation``): polygons of finite x, y pairs with at least 3
    points, or an RLE that decodes at the image's size."""
    from pycocotools import mask as mask_util

    size = [record.get("height"), record.get("width")]
    for k, ann in enumerate(record.get("annotations", [])):
        segm = ann.get("segmentation")
        if segm is None:
            continue
        where = f"{record['file_name']} (image id {record.get('image_id')!r}), mask {k}"
        if isinstance(segm, dict):
            try:
                rle = segm
                if isinstance(rle.get("counts"), list):
                    rle = mask_util.frPyObjects(rle, *rle["size"])
                decoded = mask_util.decode(rle)
            except Exception as e:  # pycocotools raises plain exceptions for a damaged RLE
                report.problems.append(f"{where}: the RLE does not decode ({e})")
                continue
            if list(decoded.shape) != size:
                report.problems.append(
                    f"{where}: the RLE is {list(decoded.shape)} (h, w), the image {size}"
                )
        elif not isinstance(segm, list) or not all(
            isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0
            and all(isinstance(v, int | float) and math.isfinite(v) for v in p)
            for p in segm
        ):  # fmt: skip
            report.problems.append(
                f"{where}: not polygons of finite x, y pairs (at least 3 points) nor an RLE"
            )


def _check_sem_seg(record: dict, num_classes: int, ignore: int, report: DatasetReport) -> None:
    width, height = load_rgb(record["file_name"], f"image id {record.get('image_id')!r}").size
    read_sem_seg_label(
        record["sem_seg_file_name"],
        num_classes,
        ignore,
        size=(height, width),
        where=f"image id {record.get('image_id')!r}",
    )


def check_dataset(name: str, progress: bool = True) -> DatasetReport:
    """Check every record of the registered dataset ``name``; returns the report (problems are
    collected, not raised, except when the dataset cannot be loaded at all)."""
    from tqdm import tqdm

    report = DatasetReport(name)
    records = DatasetCatalog.get(name)  # json-level checks raise here
    meta = MetadataCatalog.get(name)
    for record in tqdm(records, desc=f"checking {name}", disable=not progress, unit="image"):
        report.images += 1
        try:
            if "sem_seg_file_name" in record:
                classes = len(dataset_vocabulary(name))
                _check_sem_seg(record, classes, meta.get("ignore_label", 255), report)
            elif "pan_seg_file_name" in record:
                report.segments += len(record["segments_info"])
                _, _, empty = read_panoptic_pair(record)
                report.empty_segments_skipped += len(empty)
            else:
                load_rgb(record["file_name"], f"image id {record.get('image_id')!r}")
                _check_boxes(record, report)
                _check_masks(record, report)
        except (DatasetFormatError, OSError) as e:
            report.problems.append(str(e))
    return report
