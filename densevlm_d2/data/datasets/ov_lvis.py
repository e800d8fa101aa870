"""OV-LVIS: open-vocabulary instance segmentation on LVIS v1 (1,203 classes; the 337 rare ones are
novel, the 461 common and 405 frequent ones base).

Training reads ``lvis_v1_train_seen_1203_cat.json``: the official ``lvis_v1_train.json`` with all
1,203 category entries and without the rare classes' annotations (the file CLIPSelf publishes under
this name; :func:`prepare_ov_lvis_train_json` writes it, ``datasets/prepare_ov_lvis.py``).
Evaluation reads the official ``lvis_v1_val.json`` (all classes). Images are COCO 2017's: an LVIS
image's ``coco_url`` names its folder (``train2017`` or ``val2017``; LVIS val holds images of both).

The loader is this project's own (detectron2's ``load_lvis_json`` takes only polygons and assumes
category ids 1 ... K): polygons and RLE masks (compressed or not), every category layout, and the
LVIS image fields ``not_exhaustive_category_ids`` and ``neg_category_ids`` kept on the records. The
vocabulary (metadata ``vocabulary``) lists each class with its LVIS synonyms (``"aerosol can, spray
can"``; underscores become spaces), the rare classes as novel, and the frequency tags and category
ids in its ``extra`` fields.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from ...clip.vocabulary import Vocabulary, first_difference
from ...utils.files import atomic_write
from .panoptic import DatasetFormatError, check_layout

__all__ = [
    "LVIS_FREQUENCIES",
    "OV_LVIS_LAYOUT",
    "OV_LVIS_NUM_CLASSES",
    "OV_LVIS_TRAIN_JSON",
    "check_ov_lvis_train_json",
    "load_lvis_instances",
    "lvis_class_name",
    "lvis_v1_categories",
    "lvis_vocabulary",
    "prepare_ov_lvis_train_json",
    "register_ov_lvis",
    "register_ov_lvis_instances",
]

logger = logging.getLogger(__name__)

OV_LVIS_NUM_CLASSES = 1203
LVIS_FREQUENCIES = ("r", "c", "f")  # rare (novel), common, frequent
OV_LVIS_TRAIN_JSON = "lvis_v1_train_seen_1203_cat.json"  # CLIPSelf's name for the same file

OV_LVIS_LAYOUT = """\
lvis/
  lvis_v1_train.json                   official LVIS v1 (only read by prepare_ov_lvis.py)
  lvis_v1_train_seen_1203_cat.json     1,203 categories, no rare annotations (prepare_ov_lvis.py,
                                       or CLIPSelf's file of that name)
  lvis_v1_val.json                     official LVIS v1 val
coco/
  train2017/  val2017/                 COCO 2017 images (LVIS's coco_url names the folder)"""


def lvis_class_name(category: dict) -> str:
    """An LVIS category as a vocabulary name: its ``name`` then its other ``synonyms``, underscores
    as spaces, ``", "``-separated (``"aerosol can, spray can"``)."""
    words = [category["name"], *category.get("synonyms", ())]
    out: list[str] = []
    for w in words:
        w = " ".join(str(w).replace("_", " ").split())
        if w and w not in out:
            out.append(w)
    return ", ".join(out)


def lvis_vocabulary(categories: list[dict], source: str) -> Vocabulary:
    """The vocabulary of LVIS ``categories`` (sorted by id): names with synonyms, the rare ones
    novel; ``extra`` holds ``frequency`` and ``category_ids``."""
    cats = sorted(categories, key=lambda c: c["id"])
    names = [lvis_class_name(c) for c in cats]
    frequency = [c.get("frequency") for c in cats]
    novel = tuple(n for n, f in zip(names, frequency, strict=True) if f == "r")
    return Vocabulary(
        names=tuple(names),
        novel=novel,
        source=source,
        extra={"frequency": frequency, "category_ids": [c["id"] for c in cats]},
    )


def lvis_v1_categories() -> list[dict]:
    """The 1,203 LVIS v1 categories (id, name, synonyms, frequency, ...) as detectron2 ships them
    (copied from ``lvis_v1_val.json``, without the counts)."""
    from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES

    return [dict(c) for c in LVIS_CATEGORIES]


# -- reading and checking --------------------------------------------------------------------------
def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetFormatError(f"{path} is not valid json: {e}") from None
    if not isinstance(data, dict):
        raise DatasetFormatError(
            f"{path}: an LVIS file is a json object, got {type(data).__name__}"
        )
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise DatasetFormatError(f"{path}: not an LVIS file, it has no {missing}")
    return data


def _check_categories(path: str, cats: list[dict], num_classes: int | None) -> None:
    if num_classes is not None and len(cats) != num_classes:
        raise DatasetFormatError(
            f"{path} has {len(cats)} categories; OV-LVIS needs all {num_classes:,} LVIS v1 "
            "categories (the training file keeps the rare classes' entries and drops only their "
            "annotations: datasets/prepare_ov_lvis.py)"
        )
    ids = [c.get("id") for c in cats]
    repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
    if repeated:
        raise DatasetFormatError(f"{path}: category ids repeat: {repeated[:10]}")
    for c in cats:
        lacking = [k for k in ("id", "name", "frequency") if k not in c]
        if lacking:
            raise DatasetFormatError(f"{path}: category {c.get('id')!r} has no {lacking}")
        if c["frequency"] not in LVIS_FREQUENCIES:
            raise DatasetFormatError(
                f"{path}: category {c['id']} ({c['name']!r}) has frequency {c['frequency']!r}, "
                f"not one of {LVIS_FREQUENCIES}"
            )


def _image_file(image_root: str, img: dict, path: str) -> str:
    """``coco_url`` ``.../val2017/000000397133.jpg`` -> ``image_root/val2017/000000397133.jpg``;
    a ``file_name`` field is taken relative to ``image_root`` when there is no ``coco_url``."""
    if img.get("coco_url"):
        folder, name = img["coco_url"].rstrip("/").split("/")[-2:]
        return os.path.join(image_root, folder, name)
    if img.get("file_name"):
        return os.path.join(image_root, img["file_name"])
    raise DatasetFormatError(f"{path}: image {img.get('id')!r} has neither coco_url nor file_name")


def _segmentation(segm, where: str):
    """Polygons (a list of flat ``[x, y, ...]`` lists with >= 3 points) or an RLE dict (``counts``
    as a string or a list, ``size`` [h, w]); an uncompressed RLE is compressed."""
    if isinstance(segm, dict):
        if "counts" not in segm or "size" not in segm:
            raise DatasetFormatError(f"{where}: an RLE mask needs 'counts' and 'size'")
        if isinstance(segm["counts"], list):
            from pycocotools import mask as mask_util

            h, w = segm["size"]
            segm = mask_util.frPyObjects(segm, h, w)
        return segm
    if not isinstance(segm, list) or not segm:
        raise DatasetFormatError(f"{where}: segmentation is neither polygons nor an RLE dict")
    for poly in segm:
        if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
            raise DatasetFormatError(
                f"{where}: a polygon is a flat list of x, y pairs with at least 3 points"
            )
    return segm


def load_lvis_instances(
    json_file: str,
    image_root: str,
    dataset_name: str | None = None,
    *,
    num_classes: int | None = OV_LVIS_NUM_CLASSES,
    drop_novel: bool = False,
    layout: str = "",
) -> list[dict]:
    """An LVIS-format json -> detectron2 records (``bbox`` XYWH_ABS, contiguous ``category_id`` in
    category-id order, ``segmentation`` polygons or RLE; the image's ``not_exhaustive_category_ids``
    and ``neg_category_ids`` as given). ``num_classes``: the number of categories the file must have
    (None: any). ``drop_novel``: leave out the rare classes' annotations (logged; a training file
    must not train them). With ``dataset_name``, its metadata gets ``thing_classes``,
    ``thing_dataset_id_to_contiguous_id``, the ``vocabulary`` and the frequency tags."""
    check_layout({"LVIS json": json_file, "image dir": image_root}, layout)
    data = _read_json(json_file)
    cats = sorted(data["categories"], key=lambda c: c.get("id", 0))
    _check_categories(json_file, cats, num_classes)
    to_contiguous = {c["id"]: i for i, c in enumerate(cats)}
    rare = {c["id"] for c in cats if c["frequency"] == "r"}
    per_image: dict = {}
    ann_ids = []
    dropped = 0
    for ann in data["annotations"]:
        where = f"{json_file}, annotation {ann.get('id')!r}"
        if ann.get("category_id") not in to_contiguous:
            raise DatasetFormatError(f"{where}: unknown category_id {ann.get('category_id')!r}")
        if drop_novel and ann["category_id"] in rare:
            dropped += 1
            continue
        box = ann.get("bbox")
        if not isinstance(box, list) or len(box) != 4:
            raise DatasetFormatError(f"{where}: bbox {box!r} is not [x, y, w, h]")
        ann_ids.append(ann.get("id"))
        obj = {
            "bbox": [float(v) for v in box],
            "bbox_mode": BoxMode.XYWH_ABS,
            "category_id": to_contiguous[ann["category_id"]],
            "iscrowd": 0,
        }
        if "segmentation" in ann:
            obj["segmentation"] = _segmentation(ann["segmentation"], where)
        per_image.setdefault(ann.get("image_id"), []).append(obj)
    repeated = sorted(str(i) for i, n in Counter(ann_ids).items() if n > 1)
    if repeated:
        raise DatasetFormatError(f"{json_file}: annotation ids repeat: {repeated[:10]}")
    image_ids = [img.get("id") for img in data["images"]]
    unknown = set(per_image) - set(image_ids)
    if unknown:
        raise DatasetFormatError(
            f"{json_file}: annotations refer to images not in 'images': {sorted(unknown)[:10]}"
        )
    if dropped:
        logger.info("%s: left out %d annotations of rare (novel) classes", json_file, dropped)
    records = []
    for img in sorted(data["images"], key=lambda i: i["id"]):
        records.append(
            {
                "file_name": _image_file(image_root, img, json_file),
                "height": img["height"],
                "width": img["width"],
                "image_id": img["id"],
                "not_exhaustive_category_ids": img.get("not_exhaustive_category_ids", []),
                "neg_category_ids": img.get("neg_category_ids", []),
                "annotations": per_image.get(img["id"], []),
            }
        )
    if dataset_name is not None:
        vocabulary = lvis_vocabulary(cats, dataset_name)
        meta = MetadataCatalog.get(dataset_name)
        known = meta.get("vocabulary", None)
        if known is not None and known.names != vocabulary.names:
            first = first_difference(known.names, vocabulary.names)
            raise DatasetFormatError(
                f"{json_file}: its categories are not the ones {dataset_name} is registered with "
                f"(LVIS v1): class {first} is "
                f"{vocabulary.names[first] if first < len(vocabulary) else None!r}, expected "
                f"{known.names[first] if first < len(known) else None!r}"
            )
        meta.set(
            thing_classes=[n.split(", ")[0] for n in vocabulary.names],
            thing_dataset_id_to_contiguous_id=to_contiguous,
            vocabulary=vocabulary,
            class_frequency=[c["frequency"] for c in cats],
        )
    return records


# -- the training split ----------------------------------------------------------------------------
def _counts(anns: list[dict], cats: list[dict]) -> None:
    """Recompute ``image_count`` / ``instance_count`` of ``cats`` (in place) from ``anns``."""
    instances = Counter(a["category_id"] for a in anns)
    images_per = Counter({k: len(v) for k, v in _images_per_category(anns).items()})
    for c in cats:
        c["image_count"] = images_per.get(c["id"], 0)
        c["instance_count"] = instances.get(c["id"], 0)


def _images_per_category(anns: list[dict]) -> dict:
    out: dict = {}
    for a in anns:
        out.setdefault(a["category_id"], set()).add(a["image_id"])
    return out


def prepare_ov_lvis_train_json(train_json: str, out_json: str) -> dict:
    """Write the OV-LVIS training file from the official ``lvis_v1_train.json``: every category
    entry kept (their ``image_count`` / ``instance_count`` recounted, so the rare ones read 0), the
    rare classes' annotations dropped, images kept. Written atomically; returns counts."""
    data = _read_json(train_json)
    cats = [dict(c) for c in data["categories"]]
    _check_categories(train_json, cats, OV_LVIS_NUM_CLASSES)
    rare = {c["id"] for c in cats if c["frequency"] == "r"}
    anns = [a for a in data["annotations"] if a["category_id"] not in rare]
    _counts(anns, cats)
    out = {k: v for k, v in data.items() if k not in ("annotations", "categories")}
    out.update(categories=cats, annotations=anns)
    with atomic_write(out_json, binary=False) as f:
        json.dump(out, f)
    return {
        "images": len(out["images"]),
        "annotations": len(anns),
        "dropped_rare_annotations": len(data["annotations"]) - len(anns),
        "categories": len(cats),
    }


def check_ov_lvis_train_json(path: str) -> dict:
    """Check an existing training file (CLIPSelf's or one written earlier): 1,203 categories with
    frequency tags and no annotation of a rare class. Returns counts; a
    :class:`~densevlm_d2.data.datasets.DatasetFormatError` names the problem."""
    data = _read_json(path)
    cats = data["categories"]
    _check_categories(path, cats, OV_LVIS_NUM_CLASSES)
    rare = {c["id"] for c in cats if c["frequency"] == "r"}
    found = Counter(a["category_id"] for a in data["annotations"] if a["category_id"] in rare)
    if found:
        raise DatasetFormatError(
            f"{path} holds {sum(found.values())} annotations of {len(found)} rare classes (e.g. "
            f"category {sorted(found)[0]}): it is not the open-vocabulary training file; write it "
            "from lvis_v1_train.json with datasets/prepare_ov_lvis.py"
        )
    return {
        "images": len(data["images"]),
        "annotations": len(data["annotations"]),
        "categories": len(cats),
        "rare_categories": len(rare),
    }


# -- registration ----------------------------------------------------------------------------------
def register_ov_lvis_instances(
    name: str,
    json_file: str,
    image_root: str,
    *,
    train: bool,
    num_classes: int | None = OV_LVIS_NUM_CLASSES,
    layout: str = "",
) -> None:
    """Register an LVIS-format json for open-vocabulary instance segmentation: the rare classes are
    novel (their annotations are left out when ``train``); ``evaluator_type="ov_lvis"`` (box and
    mask AP, APr, APc, APf with the official ``lvis`` API). ``num_classes``: the category count the
    file must have (None: any)."""

    def load():
        return load_lvis_instances(
            json_file, image_root, name, num_classes=num_classes, drop_novel=train, layout=layout
        )

    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(
        json_file=json_file, image_root=image_root, evaluator_type="ov_lvis"
    )


def register_ov_lvis(root: str) -> None:
    """``densevlm_lvis_v1_train_base`` and ``densevlm_lvis_v1_val`` under ``root`` (``lvis/`` and
    ``coco/``, :data:`OV_LVIS_LAYOUT`). Their vocabulary (LVIS v1's 1,203 classes, rare novel) is
    known before the files are read, so that models can be built without the data."""
    coco = os.path.join(root, "coco")
    cats = lvis_v1_categories()
    for name, file, train in (
        ("densevlm_lvis_v1_train_base", OV_LVIS_TRAIN_JSON, True),
        ("densevlm_lvis_v1_val", "lvis_v1_val.json", False),
    ):
        if name in DatasetCatalog.list():
            continue
        register_ov_lvis_instances(
            name,
            os.path.join(root, "lvis", file),
            coco,
            train=train,
            layout=OV_LVIS_LAYOUT,
        )
        vocabulary = lvis_vocabulary(cats, name)
        MetadataCatalog.get(name).set(
            thing_classes=[n.split(", ")[0] for n in vocabulary.names],
            vocabulary=vocabulary,
            class_frequency=[c["frequency"] for c in cats],
        )
