"""Semantic-segmentation datasets: loading, label files, layout checks, registration, and the
standard open-vocabulary benchmarks (COCO-Stuff, COCO-Object, ADE20K-150/-847, PASCAL
Context-59/-60/-459, PASCAL VOC-20/-20b/-21).

Dataset dicts are detectron2's semantic-segmentation format: ``file_name``, ``sem_seg_file_name``
and ``image_id`` (the file stem). The label files hold one class index per pixel in the order of
the dataset's classes; ``ignore_label`` marks pixels that are not scored. Every reader of a label
file (the training mapper, the evaluator, ``tools/check_dataset.py``) reads it with
:func:`read_sem_seg_label`, which refuses a file that is not one class index per pixel, that does
not have its image's size, or that holds values that are neither a class nor the ignore label,
naming the file and the dataset.

Metadata: ``vocabulary`` (the :class:`~densevlm_d2.clip.Vocabulary`: the classes in label order,
the background class of VOC-21, VOC-20b, Context-60 and COCO-Object, and, for VOC-20b, the names a
model is queried with), detectron2's ``stuff_classes`` (the same names, for detectron2's
``SemSegEvaluator``), ``ignore_label``, ``evaluator_type="sem_seg"``, ``image_root`` and
``sem_seg_root``.

Queried and scored classes can differ. VOC-20b (CAT-Seg's "PAS-20b") scores 21 classes, the 20 VOC
classes and a background, but a model is asked about 59 names (the vocabulary's ``query_names``:
the 20 VOC classes, then 39 PASCAL-Context classes that stand for the background); a prediction of
query index 20 or more counts as class 20. ``SemSegMetricsEvaluator`` applies the mapping and the
segmenters query the vocabulary's ``queries``.

The benchmarks' label files are written from the official downloads by the scripts in
``datasets/`` (library code: ``prepare_sem_seg.py``); see ``datasets/README.md``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from ...clip.vocabulary import Vocabulary
from ..vocabulary import VOCABULARY_DIR
from .panoptic import DatasetFormatError, DatasetLayoutError, check_layout

__all__ = [
    "SEM_SEG_BENCHMARKS",
    "load_sem_seg_dicts",
    "read_id_list",
    "read_sem_seg_label",
    "register_sem_seg",
    "register_sem_seg_benchmarks",
]

# The val benchmarks in table order: the open-vocabulary table of CAT-Seg/SAN (A-847, PC-459, A-150,
# PC-59, VOC-20, VOC-20b), then the training-free benchmarks with a background class (SCLIP's order:
# VOC-21, Context-60, COCO-Object), then COCO-Stuff.
SEM_SEG_BENCHMARKS = (
    "densevlm_ade20k_847_val_sem_seg",
    "densevlm_pascal_context_459_val_sem_seg",
    "densevlm_ade20k_150_val_sem_seg",
    "densevlm_pascal_context_59_val_sem_seg",
    "densevlm_voc_20_val_sem_seg",
    "densevlm_voc_20b_val_sem_seg",
    "densevlm_voc_21_val_sem_seg",
    "densevlm_pascal_context_60_val_sem_seg",
    "densevlm_coco_object_val_sem_seg",
    "densevlm_coco_stuff_171_val_sem_seg",
)


def read_sem_seg_label(
    path: str | os.PathLike,
    num_classes: int,
    ignore_label: int,
    size: tuple[int, int] | None = None,
    where: str = "",
) -> np.ndarray:
    """A label file as an (H, W) int64 array, checked: it must decode to one value per pixel (not
    RGB), be ``size`` = (height, width) when given, and hold only class indices ``0 ..
    num_classes - 1`` and ``ignore_label``; otherwise a :class:`DatasetFormatError` naming the file
    (and ``where``, e.g. the dataset)."""
    context = f" ({where})" if where else ""
    try:
        with Image.open(path) as f:
            labels = np.asarray(f)
    except FileNotFoundError:
        raise DatasetFormatError(f"label file not found: {path}{context}") from None
    except OSError as e:
        raise DatasetFormatError(f"cannot decode the label file {path}{context}: {e}") from None
    if labels.ndim != 2:
        raise DatasetFormatError(
            f"{path}{context}: a label file holds one class index per pixel (H, W); it decodes to "
            f"shape {labels.shape} (an RGB or multi-channel image?)"
        )
    if size is not None and labels.shape != tuple(size):
        raise DatasetFormatError(
            f"{path}{context}: the labels are {labels.shape[1]}x{labels.shape[0]} (WxH) but the "
            f"image is {size[1]}x{size[0]}"
        )
    labels = labels.astype(np.int64, copy=False)
    bad = (labels < 0) | ((labels >= num_classes) & (labels != ignore_label))
    if bad.any():
        values = np.unique(labels[bad])
        raise DatasetFormatError(
            f"{path}{context}: label values {values[:10].tolist()} are neither a class index "
            f"(0..{num_classes - 1}) nor the ignore label {ignore_label}"
        )
    return labels


def read_id_list(path: str | Path) -> list[str]:
    """Image ids of a split file (one id per line, blank lines skipped)."""
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def _stems(folder: str, ext: str) -> dict[str, str]:
    """{stem: file name} of the files ``*.<ext>`` directly in ``folder``."""
    suffix = "." + ext
    with os.scandir(folder) as entries:
        return {e.name[: -len(suffix)]: e.name for e in entries if e.name.endswith(suffix)}


def _missing_error(what: str, missing: list[str], folder: str, ext: str, layout: str):
    shown = ", ".join(f"{m}.{ext}" for m in missing[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    return DatasetLayoutError(
        f"{len(missing)} {what} not found in {folder}: {shown}{more}\nExpected layout under "
        f"$DETECTRON2_DATASETS (see datasets/README.md):\n{layout}"
    )


def load_sem_seg_dicts(
    image_root: str,
    sem_seg_root: str,
    *,
    image_ext: str = "jpg",
    gt_ext: str = "png",
    image_list: str | Sequence[str] | None = None,
    all_images_annotated: bool = False,
    layout: str = "",
) -> list[dict]:
    """Pair images with label files by file stem, sorted by stem.

    The images are ``image_list`` (a split file or a list of ids) when given, else every label file
    ``*.<gt_ext>`` of ``sem_seg_root``. A missing image or label file is a
    :class:`DatasetLayoutError` naming it; so is an image without labels when
    ``all_images_annotated`` (image folders that hold exactly one split).
    """
    paths = {"image dir": image_root, "label dir": sem_seg_root}
    if isinstance(image_list, str):
        paths["image list"] = image_list
    check_layout(paths, layout)
    labels = _stems(sem_seg_root, gt_ext)
    images = _stems(image_root, image_ext)
    if image_list is None:
        ids = sorted(labels)
        if not ids:
            raise DatasetLayoutError(
                f"no label files *.{gt_ext} in {sem_seg_root}\nExpected layout under "
                f"$DETECTRON2_DATASETS (see datasets/README.md):\n{layout}"
            )
    else:
        ids = read_id_list(image_list) if isinstance(image_list, str) else list(image_list)
        missing = [i for i in ids if i not in labels]
        if missing:
            raise _missing_error("label files", missing, sem_seg_root, gt_ext, layout)
    missing = [i for i in ids if i not in images]
    if missing:
        raise _missing_error("images", missing, image_root, image_ext, layout)
    if all_images_annotated:
        unlabelled = sorted(set(images) - set(ids))
        if unlabelled:
            raise _missing_error("label files", unlabelled, sem_seg_root, gt_ext, layout)
    return [
        {
            "file_name": os.path.join(image_root, images[i]),
            "sem_seg_file_name": os.path.join(sem_seg_root, labels[i]),
            "image_id": i,
        }
        for i in sorted(ids)
    ]


def register_sem_seg(
    name: str,
    image_root: str,
    sem_seg_root: str,
    classes: Vocabulary | Sequence[str] | str | Path,
    *,
    ignore_label: int = 255,
    image_ext: str = "jpg",
    gt_ext: str = "png",
    background_index: int | None = None,
    query_classes: Sequence[str] | None = None,
    layout: str = "",
    image_list: str | Sequence[str] | None = None,
    all_images_annotated: bool = False,
) -> None:
    """Register ``name`` lazily (files are read on first use); a second call is a no-op.

    ``classes``: the class names in label order, a :class:`Vocabulary` or a class-list file
    (:mod:`densevlm_d2.clip.vocabulary`); ``background_index`` and ``query_classes`` (the names a
    model is asked about when they are not the scored ones, see the module docstring) are added
    to it. ``layout`` is shown when a file is missing.
    """
    if name in DatasetCatalog.list():
        return
    if isinstance(classes, str | Path):
        vocabulary = Vocabulary.from_file(classes, source=name)
    else:
        vocabulary = Vocabulary.from_names(classes, source=name)
    changes = {"source": name}
    if background_index is not None:
        changes["background_index"] = background_index
    if query_classes is not None:
        changes["query_names"] = tuple(query_classes)
    try:
        vocabulary = vocabulary.replace(**changes)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None
    if 0 <= ignore_label < len(vocabulary):
        raise ValueError(
            f"{name}: ignore_label {ignore_label} is a class index of its {len(vocabulary)} classes"
        )
    DatasetCatalog.register(
        name,
        lambda: load_sem_seg_dicts(
            image_root,
            sem_seg_root,
            image_ext=image_ext,
            gt_ext=gt_ext,
            image_list=image_list,
            all_images_annotated=all_images_annotated,
            layout=layout,
        ),
    )
    MetadataCatalog.get(name).set(
        vocabulary=vocabulary,
        stuff_classes=list(vocabulary.names),
        ignore_label=ignore_label,
        evaluator_type="sem_seg",
        image_root=image_root,
        sem_seg_root=sem_seg_root,
    )


@dataclass(frozen=True)
class _Benchmark:
    key: str  # vocabulary json and registered name: <prefix><key>_<split>_sem_seg
    split: str
    image_dir: str  # relative to the root
    label_dir: str
    layout: str
    gt_ext: str = "png"
    ignore_label: int = 255
    all_images_annotated: bool = True  # False where the image folder holds other splits too
    # the split's id list (relative to the root): every id must have its label file
    image_list: str | None = None


_COCO = """\
coco/
  {split}/                                  images (*.jpg; from {split}.zip)
  stuffthingmaps/{split}/                   COCO-Stuff maps (stuffthingmaps_trainval2017.zip)
  stuffthingmaps_detectron2/{split}/        written by datasets/prepare_coco_stuff_sem_seg.py
  coco_object_detectron2/val2017/           idem (COCO-Object)"""
_ADE150 = """\
ADEChallengeData2016/
  images/validation/                        images (*.jpg)
  annotations/validation/                   release labels (0 void, 1..150)
  annotations_detectron2/validation/        written by datasets/prepare_ade20k_sem_seg.py"""
_ADE847 = """\
ADE20K_2021_17_01/
  index_ade20k.pkl  images/ADE/validation/  the full ADE20K release
  images_detectron2/validation/             written by datasets/prepare_ade20k_full_sem_seg.py
  annotations_detectron2/validation/        idem (16-bit *.tif)"""
_CONTEXT = """\
VOCdevkit/VOC2010/
  JPEGImages/                               VOC2010 images (VOCtrainval_03-May-2010.tar)
  trainval/*.mat  labels.txt                PASCAL-Context annotations (trainval.tar.gz)
  pascalcontext_val.txt                     val image ids
  annotations_detectron2/{pc59_val,pc60_val,pc459_val}/
                                            written by datasets/prepare_pascal_context.py"""
_VOC = """\
VOCdevkit/VOC2012/
  JPEGImages/  SegmentationClass/  ImageSets/Segmentation/val.txt   (VOCtrainval_11-May-2012.tar)
  annotations_detectron2/val/               written by datasets/prepare_voc.py (VOC-20)
  annotations_detectron2_voc21/val/         idem (VOC-21)
  annotations_detectron2_bg/val/        idem (VOC-20b)"""

_VOC_VAL = "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt"

_BENCHMARKS = (
    _Benchmark(
        "coco_stuff_171",
        "train",
        "coco/train2017",
        "coco/stuffthingmaps_detectron2/train2017",
        _COCO.format(split="train2017"),
    ),
    _Benchmark(
        "coco_stuff_171",
        "val",
        "coco/val2017",
        "coco/stuffthingmaps_detectron2/val2017",
        _COCO.format(split="val2017"),
    ),
    _Benchmark(
        "coco_object",
        "val",
        "coco/val2017",
        "coco/coco_object_detectron2/val2017",
        _COCO.format(split="val2017"),
    ),
    _Benchmark(
        "ade20k_150",
        "val",
        "ADEChallengeData2016/images/validation",
        "ADEChallengeData2016/annotations_detectron2/validation",
        _ADE150,
    ),
    _Benchmark(
        "ade20k_847",
        "val",
        "ADE20K_2021_17_01/images_detectron2/validation",
        "ADE20K_2021_17_01/annotations_detectron2/validation",
        _ADE847,
        gt_ext="tif",
        ignore_label=65535,
    ),
    _Benchmark(
        "pascal_context_59",
        "val",
        "VOCdevkit/VOC2010/JPEGImages",
        "VOCdevkit/VOC2010/annotations_detectron2/pc59_val",
        _CONTEXT,
        all_images_annotated=False,
    ),
    _Benchmark(
        "pascal_context_459",
        "val",
        "VOCdevkit/VOC2010/JPEGImages",
        "VOCdevkit/VOC2010/annotations_detectron2/pc459_val",
        _CONTEXT,
        gt_ext="tif",
        ignore_label=65535,
        all_images_annotated=False,
    ),
    _Benchmark(
        "pascal_context_60",
        "val",
        "VOCdevkit/VOC2010/JPEGImages",
        "VOCdevkit/VOC2010/annotations_detectron2/pc60_val",
        _CONTEXT,
        all_images_annotated=False,
    ),
    _Benchmark(
        "voc_20",
        "val",
        "VOCdevkit/VOC2012/JPEGImages",
        "VOCdevkit/VOC2012/annotations_detectron2/val",
        _VOC,
        all_images_annotated=False,
        image_list=_VOC_VAL,
    ),
    _Benchmark(
        "voc_21",
        "val",
        "VOCdevkit/VOC2012/JPEGImages",
        "VOCdevkit/VOC2012/annotations_detectron2_voc21/val",
        _VOC,
        all_images_annotated=False,
        image_list=_VOC_VAL,
    ),
    _Benchmark(
        "voc_20b",
        "val",
        "VOCdevkit/VOC2012/JPEGImages",
        "VOCdevkit/VOC2012/annotations_detectron2_bg/val",
        _VOC,
        all_images_annotated=False,
        image_list=_VOC_VAL,
    ),
)


def register_sem_seg_benchmarks(root: str | None = None, prefix: str = "densevlm_") -> list[str]:
    """Register the benchmarks under ``root`` (default ``$DETECTRON2_DATASETS`` or ``datasets``) as
    ``<prefix><benchmark>_<split>_sem_seg``; returns the names. Another ``prefix`` registers a
    second copy (e.g. for another root)."""
    root = root if root is not None else os.getenv("DETECTRON2_DATASETS", "datasets")
    names = []
    for b in _BENCHMARKS:
        name = f"{prefix}{b.key}_{b.split}_sem_seg"
        register_sem_seg(
            name,
            os.path.join(root, b.image_dir),
            os.path.join(root, b.label_dir),
            VOCABULARY_DIR / f"{b.key}.json",
            ignore_label=b.ignore_label,
            gt_ext=b.gt_ext,
            layout=b.layout,
            all_images_annotated=b.all_images_annotated,
            image_list=os.path.join(root, b.image_list) if b.image_list else None,
        )
        names.append(name)
    return names
