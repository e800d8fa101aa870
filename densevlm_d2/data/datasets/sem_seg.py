"""Semantic-segmentation datasets: loading, layout checks, registration, and the standard
open-vocabulary benchmarks (COCO-Stuff, COCO-Object, ADE20K-150/-847, PASCAL Context-59/-60/-459,
PASCAL VOC-20/-20b/-21).

Dataset dicts are detectron2's semantic-segmentation format: ``file_name``, ``sem_seg_file_name``
and ``image_id`` (the file stem). The label files hold one class index per pixel in the order of
the dataset's ``stuff_classes``; ``ignore_label`` marks pixels that are not scored.

Metadata: ``stuff_classes`` (a class may list ``", "``-separated synonyms, the first is its display
name), ``display_classes`` (those display names, ``"background"`` at ``background_index``),
``ignore_label``, ``evaluator_type="sem_seg"``, ``image_root``, ``sem_seg_root``,
``background_index`` (the background class of VOC-21, VOC-20b, Context-60 and COCO-Object, else
None), ``class_names_file`` (the vocabulary json the names came from), ``query_classes`` and
``surplus_prediction_class`` (both None but for VOC-20b).

Queried and scored classes can differ. VOC-20b (CAT-Seg's "PAS-20b") scores 21 classes, the 20 VOC
classes and a background, but a model is asked about 59 names (``query_classes``: the 20 VOC
classes, then 39 PASCAL-Context classes that stand for the background); a prediction of query
index ``>= surplus_prediction_class`` (20) counts as class 20. The query list starts with the
scored classes before ``surplus_prediction_class``, in the same order, so that a query index below
it is the class index; ``SemSegMetricsEvaluator`` applies the mapping and
``CLIPDenseSegmenter`` queries ``query_classes``.

The benchmarks' label files are written from the official downloads by the scripts in
``datasets/`` (library code: ``prepare_sem_seg.py``); see ``datasets/README.md``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog

from .panoptic import DatasetLayoutError, check_layout

__all__ = [
    "SEM_SEG_BENCHMARKS",
    "SEM_SEG_VOCABULARY_DIR",
    "display_names",
    "load_sem_seg_classes",
    "load_sem_seg_dicts",
    "read_id_list",
    "register_sem_seg",
    "register_sem_seg_benchmarks",
    "sem_seg_vocabulary",
]

SEM_SEG_VOCABULARY_DIR = Path(__file__).resolve().parents[1] / "vocabularies" / "sem_seg"

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


def sem_seg_vocabulary(key: str) -> dict:
    """The json of a benchmark's vocabulary (``SEM_SEG_VOCABULARY_DIR/<key>.json``): ``source``,
    ``labels`` (the label convention), ``classes``, where preparation needs them ``dataset_ids``,
    and where the model is queried with other names than the scored ones (VOC-20b)
    ``query_classes``."""
    return json.loads((SEM_SEG_VOCABULARY_DIR / f"{key}.json").read_text())


def load_sem_seg_classes(json_file: str | Path, field: str = "classes") -> list[str]:
    """The ``classes`` list of a vocabulary json ``{"source": ..., "classes": [...]}``, or another
    list of names of it (``field="query_classes"``)."""
    data = json.loads(Path(json_file).read_text())
    classes = data.get(field) if isinstance(data, dict) else None
    if not classes or not all(isinstance(c, str) and c.strip() for c in classes):
        raise ValueError(f"{json_file}: expected {{{field!r}: [non-empty strings]}}")
    return list(classes)


def display_names(classes: Sequence[str], background_index: int | None = None) -> list[str]:
    """The first synonym of each class; ``"background"`` at ``background_index`` (SCLIP's
    background entries list background words, e.g. "sky, wall, tree, ...")."""
    names = [c.split(",")[0].strip() for c in classes]
    if background_index is not None:
        names[background_index] = "background"
    return names


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
    classes: Sequence[str] | str | Path,
    *,
    ignore_label: int = 255,
    image_ext: str = "jpg",
    gt_ext: str = "png",
    background_index: int | None = None,
    layout: str = "",
    image_list: str | Sequence[str] | None = None,
    all_images_annotated: bool = False,
    query_classes: Sequence[str] | None = None,
    surplus_prediction_class: int | None = None,
) -> None:
    """Register ``name`` lazily (files are read on first use); a second call is a no-op.

    ``classes`` is the list of class names in label order or a vocabulary json (see
    :func:`load_sem_seg_classes`); ``layout`` is shown when a file is missing.

    ``query_classes`` and ``surplus_prediction_class`` (given together) describe a model queried
    with more names than are scored (VOC-20b): ``query_classes`` starts with the first
    ``surplus_prediction_class`` classes in the same order, and every prediction of a query index
    ``>= surplus_prediction_class`` counts as that class, the last one.
    """
    if name in DatasetCatalog.list():
        return
    class_names_file = None
    if isinstance(classes, str | Path):
        class_names_file = str(classes)
        classes = load_sem_seg_classes(classes)
    classes = list(classes)
    if not classes:
        raise ValueError(f"{name}: no classes")
    if 0 <= ignore_label < len(classes):
        raise ValueError(
            f"{name}: ignore_label {ignore_label} is a class index of its {len(classes)} classes"
        )
    if background_index is not None and not 0 <= background_index < len(classes):
        raise ValueError(f"{name}: background_index {background_index} is not a class index")
    if query_classes is not None:
        query_classes = list(query_classes)
    _check_query_classes(name, classes, query_classes, surplus_prediction_class)
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
        stuff_classes=classes,
        display_classes=display_names(classes, background_index),
        ignore_label=ignore_label,
        evaluator_type="sem_seg",
        image_root=image_root,
        sem_seg_root=sem_seg_root,
        background_index=background_index,
        class_names_file=class_names_file,
        query_classes=query_classes,
        surplus_prediction_class=surplus_prediction_class,
    )


def _check_query_classes(
    name: str,
    classes: list[str],
    query_classes: list[str] | None,
    surplus: int | None,
) -> None:
    """ValueError naming what is wrong with a ``query_classes`` / ``surplus_prediction_class``
    pair (see :func:`register_sem_seg`)."""
    if query_classes is None and surplus is None:
        return
    if query_classes is None or surplus is None:
        raise ValueError(
            f"{name}: query_classes and surplus_prediction_class go together (got only "
            f"{'query_classes' if surplus is None else 'surplus_prediction_class'})"
        )
    if surplus != len(classes) - 1:
        raise ValueError(
            f"{name}: surplus_prediction_class must be the last class index, "
            f"{len(classes) - 1} (predictions at or above it count as that class), got {surplus}"
        )
    if len(query_classes) <= surplus:
        raise ValueError(
            f"{name}: query_classes must hold more than the {surplus} classes scored one by one, "
            f"got {len(query_classes)} names"
        )
    if not all(isinstance(c, str) and c.strip() for c in query_classes):
        raise ValueError(f"{name}: query_classes must be non-empty strings")
    if query_classes[:surplus] != classes[:surplus]:
        pairs = zip(query_classes[:surplus], classes[:surplus], strict=True)
        wrong = next(i for i, (q, c) in enumerate(pairs) if q != c)
        raise ValueError(
            f"{name}: query_classes must start with the first {surplus} classes in the same order "
            f"(a query index below surplus_prediction_class is the class index); index {wrong} is "
            f"{query_classes[wrong]!r}, the class is {classes[wrong]!r}"
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
    background_index: int | None = None
    all_images_annotated: bool = True  # False where the image folder holds other splits too
    # the index from which predictions count as the last class; the model is then queried with the
    # vocabulary json's "query_classes" (VOC-20b)
    surplus_prediction_class: int | None = None


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
        background_index=0,
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
        background_index=0,
        all_images_annotated=False,
    ),
    _Benchmark(
        "voc_20",
        "val",
        "VOCdevkit/VOC2012/JPEGImages",
        "VOCdevkit/VOC2012/annotations_detectron2/val",
        _VOC,
        all_images_annotated=False,
    ),
    _Benchmark(
        "voc_21",
        "val",
        "VOCdevkit/VOC2012/JPEGImages",
        "VOCdevkit/VOC2012/annotations_detectron2_voc21/val",
        _VOC,
        background_index=0,
        all_images_annotated=False,
    ),
    _Benchmark(
        "voc_20b",
        "val",
        "VOCdevkit/VOC2012/JPEGImages",
        "VOCdevkit/VOC2012/annotations_detectron2_bg/val",
        _VOC,
        background_index=20,
        all_images_annotated=False,
        surplus_prediction_class=20,
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
        vocabulary = SEM_SEG_VOCABULARY_DIR / f"{b.key}.json"
        query_classes = None
        if b.surplus_prediction_class is not None:
            query_classes = load_sem_seg_classes(vocabulary, "query_classes")
        register_sem_seg(
            name,
            os.path.join(root, b.image_dir),
            os.path.join(root, b.label_dir),
            vocabulary,
            ignore_label=b.ignore_label,
            gt_ext=b.gt_ext,
            background_index=b.background_index,
            layout=b.layout,
            all_images_annotated=b.all_images_annotated,
            query_classes=query_classes,
            surplus_prediction_class=b.surplus_prediction_class,
        )
        names.append(name)
    return names
