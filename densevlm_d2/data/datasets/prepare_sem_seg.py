"""Write the label files of the semantic-segmentation benchmarks from the official downloads.

One function per source; each label mapping is a pure numpy function. Output layouts and label
conventions are those of Mask2Former's/CAT-Seg's preparation scripts (SCLIP's/GroupViT's for
COCO-Object, VOC-21 and Context-60), so data prepared with them can be used as it is (VOC-20b's
labels are CAT-Seg's, in a folder of another name):

* COCO-Stuff-171: ``coco/stuffthingmaps/<split>/*.png`` (pixel = COCO category id - 1, 255
  unlabelled) -> ``coco/stuffthingmaps_detectron2/<split>/*.png``: the 171 used ids in id order ->
  0..170, everything else 255.
* COCO-Object: the same maps -> ``coco/coco_object_detectron2/<split>/*.png``: the 80 things in id
  order -> 1..80, every stuff *and unlabelled* pixel -> 0 (background), as GroupViT's conversion
  used by SCLIP/TCL does.
* ADE20K-150: ``ADEChallengeData2016/annotations/validation/*.png`` -> ``annotations_detectron2/
  validation/*.png``: k -> k - 1, 0 (void) -> 255.
* ADE20K-847: ``ADE20K_2021_17_01`` (``index_ade20k.pkl``; ``images/ADE/validation/**/
  ADE_val_*.jpg`` and ``*_seg.png``, class = R // 10 * 256 + G) -> ``images_detectron2/
  validation/*.jpg`` (images with a shorter side over 512 resized to 512, bilinear, as
  Mask2Former does; all re-encoded) and ``annotations_detectron2/validation/*.tif`` (16-bit,
  847 classes, 65535 ignore; nearest).
* PASCAL Context: ``VOCdevkit/VOC2010/trainval/<id>.mat`` (``LabelMap``: labels.txt ids 1..459)
  for the val ids -> ``annotations_detectron2/pc459_val/*.tif`` (16-bit, k -> k - 1, 0 -> 65535),
  ``pc59_val/*.png`` (the 59 classes, others 255) and ``pc60_val/*.png`` (0 background, 1..59).
* PASCAL VOC 2012: ``SegmentationClass/*.png`` (palette indices, 255 boundary) for
  ``ImageSets/Segmentation/val.txt`` -> ``annotations_detectron2/val/*.png`` (20 classes,
  background -> 255), ``annotations_detectron2_voc21/val/*.png`` (0 background, 1..20) and
  ``annotations_detectron2_bg/val/*.png`` (VOC-20b: 1..20 -> 0..19, background -> 20; CAT-Seg's
  folder).

Each output folder is written as a whole (into a temporary folder next to it, which replaces it only
when every file is in it), so a run stopped by a bad raw file or an interruption leaves the previous
folder, or none, never a partial split that would load.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import pickle
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ...clip.io import restricted_pickle_load
from ...utils.files import atomic_folder
from ..vocabulary import shipped_vocabulary
from .sem_seg import read_id_list

__all__ = [
    "IGNORE",
    "IGNORE_16BIT",
    "ade20k_150_labels",
    "ade20k_847_labels",
    "ade20k_full_classes",
    "ade20k_full_val_images",
    "coco_object_labels",
    "coco_stuff_171_labels",
    "pascal_context_59_labels",
    "pascal_context_60_labels",
    "pascal_context_459_labels",
    "prepare_ade20k_150",
    "prepare_ade20k_847",
    "prepare_coco_stuff",
    "prepare_pascal_context",
    "prepare_voc",
    "read_context_labels",
    "resize_bilinear",
    "resize_labels_nearest",
    "shorter_side_size",
    "voc_20_labels",
    "voc_20b_labels",
    "voc_21_labels",
]

IGNORE = 255
IGNORE_16BIT = 65535

DOWNLOADS = {
    "coco": "http://images.cocodataset.org/zips/{val,train}2017.zip and "
    "http://calvin.inf.ed.ac.uk/wp-content/uploads/data/cocostuffdataset/"
    "stuffthingmaps_trainval2017.zip",
    "ade150": "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip",
    "ade_full": "ADE20K_2021_17_01.zip from https://groups.csail.mit.edu/vision/datasets/ADE20K/ "
    "(registration required)",
    "context": "http://host.robots.ox.ac.uk/pascal/VOC/voc2010/VOCtrainval_03-May-2010.tar, "
    "https://cs.stanford.edu/~roozbeh/pascal-context/trainval.tar.gz (trainval/, labels.txt) "
    "and https://raw.githubusercontent.com/KU-CVLAB/CAT-Seg/main/datasets/pascalcontext_val.txt",
    "voc": "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
}


# ---- label mappings (pure) ----------------------------------------------------------------------


@functools.cache
def _ids(key: str) -> tuple[int, ...]:
    """``dataset_ids`` of a vocabulary json: COCO category ids (stuffthingmaps pixel = id - 1),
    PASCAL-Context labels.txt ids, full-ADE20K class values."""
    return tuple(shipped_vocabulary(key).extra["dataset_ids"])


# name: (value of every source label not listed, output dtype, the (source, target) pairs)
_MAPPINGS = {
    "coco_stuff_171": (
        IGNORE,
        np.uint8,
        lambda: ((c - 1, i) for i, c in enumerate(_ids("coco_stuff_171"))),
    ),
    "coco_object": (
        0,
        np.uint8,
        lambda: ((c - 1, i + 1) for i, c in enumerate(_ids("coco_stuff_171")[:80])),
    ),
    "ade20k_150": (IGNORE, np.uint8, lambda: ((k, k - 1) for k in range(1, 151))),
    "ade20k_847": (
        IGNORE_16BIT,
        np.uint16,
        lambda: ((c, i) for i, c in enumerate(_ids("ade20k_847"))),
    ),
    "pascal_context_459": (IGNORE_16BIT, np.uint16, lambda: ((k, k - 1) for k in range(1, 460))),
    "pascal_context_59": (
        IGNORE,
        np.uint8,
        lambda: ((c, i) for i, c in enumerate(_ids("pascal_context_59"))),
    ),
    "pascal_context_60": (
        0,
        np.uint8,
        lambda: ((c, i + 1) for i, c in enumerate(_ids("pascal_context_59"))),
    ),
    "voc_20": (IGNORE, np.uint8, lambda: ((k, k - 1) for k in range(1, 21))),
    "voc_21": (IGNORE, np.uint8, lambda: ((k, k) for k in range(21))),
    "voc_20b": (IGNORE, np.uint8, lambda: ((k, k - 1 if k else 20) for k in range(21))),
}


@functools.cache
def _lookup(name: str) -> np.ndarray:
    fill, dtype, pairs = _MAPPINGS[name]
    pairs = list(pairs())
    table = np.full(max(src for src, _ in pairs) + 1, fill, dtype)
    for src, dst in pairs:
        table[src] = dst
    table.flags.writeable = False
    return table


def _map(name: str, labels: np.ndarray) -> np.ndarray:
    """Apply mapping ``name`` to an integer label array."""
    table = _lookup(name)
    labels = np.asarray(labels).astype(np.int64, copy=False)
    out = np.full(labels.shape, _MAPPINGS[name][0], table.dtype)
    valid = (labels >= 0) & (labels < len(table))
    out[valid] = table[labels[valid]]
    return out


def coco_stuff_171_labels(raw: np.ndarray) -> np.ndarray:
    """stuffthingmaps pixels (category id - 1, 255 unlabelled) -> 0..170 in id order, else 255."""
    return _map("coco_stuff_171", raw)


def coco_object_labels(raw: np.ndarray) -> np.ndarray:
    """stuffthingmaps pixels -> 1..80 for the things in id order, 0 for everything else (stuff and
    unlabelled, GroupViT's COCO-Object convention)."""
    return _map("coco_object", raw)


def ade20k_150_labels(raw: np.ndarray) -> np.ndarray:
    """ADEChallengeData2016 labels (0 void, 1..150) -> 0..149, void 255."""
    return _map("ade20k_150", raw)


def ade20k_full_classes(seg_rgb: np.ndarray) -> np.ndarray:
    """The class map of a full-ADE20K ``*_seg.png``: R // 10 * 256 + G (0 = unlabelled)."""
    seg_rgb = np.asarray(seg_rgb)
    return (seg_rgb[..., 0].astype(np.int32) // 10) * 256 + seg_rgb[..., 1].astype(np.int32)


def ade20k_847_labels(classes: np.ndarray) -> np.ndarray:
    """Full-ADE20K class map -> the 847 classes (uint16), everything else 65535."""
    return _map("ade20k_847", classes)


def pascal_context_459_labels(label_map: np.ndarray) -> np.ndarray:
    """PASCAL-Context LabelMap (labels.txt ids 1..459, 0 unlabelled) -> 0..458, else 65535."""
    return _map("pascal_context_459", label_map)


def pascal_context_59_labels(label_map: np.ndarray) -> np.ndarray:
    """LabelMap -> 0..58 for the 59 classes (increasing labels.txt id), everything else 255."""
    return _map("pascal_context_59", label_map)


def pascal_context_60_labels(label_map: np.ndarray) -> np.ndarray:
    """LabelMap -> 1..59 for the 59 classes, 0 (background) for everything else."""
    return _map("pascal_context_60", label_map)


def voc_20_labels(raw: np.ndarray) -> np.ndarray:
    """VOC palette indices (0 background, 1..20, 255 boundary) -> 0..19; background 255."""
    return _map("voc_20", raw)


def voc_21_labels(raw: np.ndarray) -> np.ndarray:
    """VOC palette indices -> 0 background, 1..20 as they are; everything else 255."""
    return _map("voc_21", raw)


def voc_20b_labels(raw: np.ndarray) -> np.ndarray:
    """VOC palette indices -> 0..19 for the 20 classes, 20 for background (0); everything else
    (255 boundary) 255 (CAT-Seg's VOC-20b)."""
    return _map("voc_20b", raw)


# ---- resizing (ADE20K-847, as Mask2Former's preparation) --------------------------------------


def shorter_side_size(height: int, width: int, max_size: int = 512) -> tuple[int, int] | None:
    """(height, width) with the shorter side ``max_size`` when it is longer, else None."""
    if width >= height > max_size:
        return max_size, round(width / float(height) * max_size)
    if height >= width > max_size:
        return round(height / float(width) * max_size), max_size
    return None


def resize_labels_nearest(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize to (height, width) with OpenCV's ``INTER_NEAREST`` sampling
    (source index = floor(dst index * src / dst))."""
    rows = _nearest_index(labels.shape[0], size[0])
    cols = _nearest_index(labels.shape[1], size[1])
    return labels[rows[:, None], cols[None, :]]


def _nearest_index(src: int, dst: int) -> np.ndarray:
    index = np.floor(np.arange(dst) * (1.0 / (dst / src))).astype(np.int64)
    return np.minimum(index, src - 1)


def resize_bilinear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a uint8 image to (height, width): OpenCV's ``INTER_LINEAR`` (what
    Mask2Former used) when OpenCV is installed, else a numpy version of it (within 1 grey level)."""
    try:
        import cv2
    except ImportError:
        warnings.warn(
            "OpenCV is not installed: resizing with numpy, within 1 grey level of Mask2Former's "
            "images (pip install opencv-python-headless for identical ones)",
            stacklevel=2,
        )
        return _bilinear_numpy(image, size)
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def _linear_axis(src: int, dst: int):
    x = np.maximum((np.arange(dst) + 0.5) * (src / dst) - 0.5, 0.0)
    x0 = np.minimum(np.floor(x).astype(np.int64), src - 1)
    return x0, np.minimum(x0 + 1, src - 1), (x - x0).astype(np.float32)


def _bilinear_numpy(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    img = image.astype(np.float32)
    r0, r1, fr = _linear_axis(image.shape[0], size[0])
    c0, c1, fc = _linear_axis(image.shape[1], size[1])
    extra = (1,) * (img.ndim - 2)
    fr = fr.reshape(-1, 1, *extra)
    rows = img[r0] * (1 - fr) + img[r1] * fr
    fc = fc.reshape(1, -1, *extra)
    out = rows[:, c0] * (1 - fc) + rows[:, c1] * fc
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


# ---- files --------------------------------------------------------------------------------------


def _require(paths: Mapping[str, str | Path], download: str) -> None:
    """FileNotFoundError naming every missing path (keys ending in "dir" must be folders)."""
    missing = []
    for what, path in paths.items():
        ok = os.path.isdir(path) if what.endswith("dir") else os.path.isfile(path)
        if not ok:
            missing.append(f"  {path}  ({what})")
    if missing:
        raise FileNotFoundError(
            "missing raw files/folders:\n" + "\n".join(missing) + f"\nDownload: {download} "
            "(see datasets/README.md)"
        )


def _require_each(what: str, paths: Sequence[str], download: str) -> None:
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        more = f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise FileNotFoundError(
            f"{len(missing)} {what} missing:\n  "
            + "\n  ".join(missing[:10])
            + more
            + f"\nDownload: {download} (see datasets/README.md)"
        )


def _read_index_png(path: str | Path) -> np.ndarray:
    """The indices of a label PNG (grey or palette), as uint8."""
    with Image.open(path) as img:
        if img.mode not in ("L", "P"):
            raise ValueError(f"{path}: expected a grey or palette label PNG, got mode {img.mode}")
        return np.asarray(img)


def _save(array: np.ndarray, path: str | Path, fmt: str) -> None:
    Image.fromarray(array).save(path, format=fmt)


@contextlib.contextmanager
def _output_folders(*folders: Path):
    """Temporary folders that replace ``folders`` together when the block ends without an error
    (:func:`~densevlm_d2.utils.atomic_folder`)."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(atomic_folder(f)) for f in folders]


def _progress(items, desc: str, enabled: bool):
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=desc)


def _stems(folder: str | Path, ext: str) -> list[str]:
    return sorted(p.name[: -len(ext)] for p in Path(folder).iterdir() if p.name.endswith(ext))


# ---- COCO-Stuff / COCO-Object -------------------------------------------------------------------


def prepare_coco_stuff(
    coco_root: str | Path,
    splits: Sequence[str] = ("val2017", "train2017"),
    coco_object_splits: Sequence[str] = ("val2017",),
    progress: bool = True,
) -> list[Path]:
    """COCO-Stuff-171 labels for ``splits`` and COCO-Object labels for ``coco_object_splits``
    (see the module docstring); returns the output folders."""
    coco = Path(coco_root)
    todo = list(dict.fromkeys([*splits, *coco_object_splits]))
    required = {}
    for split in todo:
        required[f"{split} image dir"] = coco / split
        required[f"stuffthingmaps {split} dir"] = coco / "stuffthingmaps" / split
    _require(required, DOWNLOADS["coco"])
    outputs = []
    for split in todo:
        jobs = []
        if split in splits:
            jobs.append((coco / "stuffthingmaps_detectron2" / split, coco_stuff_171_labels))
        if split in coco_object_splits:
            jobs.append((coco / "coco_object_detectron2" / split, coco_object_labels))
        raw_dir = coco / "stuffthingmaps" / split
        with _output_folders(*(out for out, _ in jobs)) as tmps:
            for stem in _progress(_stems(raw_dir, ".png"), f"COCO-Stuff {split}", progress):
                raw = _read_index_png(raw_dir / f"{stem}.png")
                for tmp, (_, mapping) in zip(tmps, jobs, strict=True):
                    _save(mapping(raw), tmp / f"{stem}.png", "PNG")
        outputs += [out for out, _ in jobs]
    return outputs


# ---- ADE20K-150 ---------------------------------------------------------------------------------


def prepare_ade20k_150(ade_root: str | Path, progress: bool = True) -> Path:
    """``annotations_detectron2/validation/*.png`` under ``ade_root`` (ADEChallengeData2016)."""
    ade = Path(ade_root)
    raw_dir = ade / "annotations" / "validation"
    _require(
        {"image dir": ade / "images" / "validation", "annotation dir": raw_dir},
        DOWNLOADS["ade150"],
    )
    out = ade / "annotations_detectron2" / "validation"
    with _output_folders(out) as (tmp,):
        for stem in _progress(_stems(raw_dir, ".png"), "ADE20K-150", progress):
            labels = ade20k_150_labels(_read_index_png(raw_dir / f"{stem}.png"))
            _save(labels, tmp / f"{stem}.png", "PNG")
    return out


# ---- ADE20K-847 ---------------------------------------------------------------------------------


def _ade_full_image(ade_root: Path, folder: str, filename: str) -> Path:
    """An image path of ``index_ade20k.pkl``: its folder from ``images/`` on, under ``ade_root``
    (the index's folders start with ``ADE20K_2021_17_01/``)."""
    parts = Path(folder).parts
    rel = parts[parts.index("images") :] if "images" in parts else parts
    return ade_root.joinpath(*rel, filename)


def ade20k_full_val_images(ade_root: str | Path) -> list[Path]:
    """The validation images listed by ``index_ade20k.pkl`` (file names ``ADE_val_*``)."""
    ade = Path(ade_root)
    with open(ade / "index_ade20k.pkl", "rb") as f:
        try:  # containers, strings and numpy arrays only: a pickle cannot run code here
            index = restricted_pickle_load(f)
        except pickle.UnpicklingError as e:
            raise ValueError(f"{ade / 'index_ade20k.pkl'} cannot be read: {e}") from None
    if not {"folder", "filename"} <= set(index):
        raise ValueError(f"{ade / 'index_ade20k.pkl'} has no 'folder'/'filename' lists")
    return [
        _ade_full_image(ade, str(folder), str(name))
        for folder, name in zip(index["folder"], index["filename"], strict=True)
        if str(name).split("_")[1:2] == ["val"]
    ]


def prepare_ade20k_847(
    ade_root: str | Path, max_size: int = 512, progress: bool = True
) -> tuple[Path, Path]:
    """``images_detectron2/validation`` and ``annotations_detectron2/validation`` under
    ``ade_root`` (ADE20K_2021_17_01); returns both folders."""
    ade = Path(ade_root)
    _require(
        {
            "index file": ade / "index_ade20k.pkl",
            "image dir": ade / "images" / "ADE" / "validation",
        },
        DOWNLOADS["ade_full"],
    )
    images = ade20k_full_val_images(ade)
    if not images:
        raise ValueError(f"{ade / 'index_ade20k.pkl'} lists no ADE_val_* image")
    segs = [p.with_name(p.stem + "_seg.png") for p in images]
    _require_each(
        "ADE20K images/segmentations", [str(p) for p in images + segs], DOWNLOADS["ade_full"]
    )
    image_out = ade / "images_detectron2" / "validation"
    label_out = ade / "annotations_detectron2" / "validation"
    pairs = list(zip(images, segs, strict=True))
    with _output_folders(image_out, label_out) as (image_tmp, label_tmp):
        for image_path, seg_path in _progress(pairs, "ADE20K-847", progress):
            with Image.open(image_path) as img:
                image = np.asarray(img)
            with Image.open(seg_path) as seg:
                classes = ade20k_full_classes(np.asarray(seg.convert("RGB")))
            if classes.shape != image.shape[:2]:
                raise ValueError(
                    f"{seg_path} is {classes.shape}, {image_path} is {image.shape[:2]}"
                )
            size = shorter_side_size(*image.shape[:2], max_size=max_size)
            if size is not None:
                image = resize_bilinear(image, size)
                classes = resize_labels_nearest(classes, size)
            _save(image, image_tmp / image_path.name, "JPEG")
            _save(ade20k_847_labels(classes), label_tmp / f"{image_path.stem}.tif", "TIFF")
    return image_out, label_out


# ---- PASCAL Context -----------------------------------------------------------------------------


def read_context_labels(path: str | Path) -> dict[int, str]:
    """labels.txt of PASCAL-Context: ``{id: name}`` from its ``"<id>: <name>"`` lines."""
    labels = {}
    with open(path) as f:
        for line in f:
            key, sep, name = line.partition(":")
            if sep and key.strip().isdigit():
                labels[int(key)] = name.strip()
    return labels


def _check_context_labels(path: Path) -> None:
    """The ids of labels.txt must name the classes this preparation assumes."""
    labels = read_context_labels(path)
    names = shipped_vocabulary("pascal_context_459").names
    wrong = [
        f"{cid}: {labels.get(cid)!r} (expected {names[cid - 1]!r})"
        for cid in _ids("pascal_context_59")
        if labels.get(cid) != names[cid - 1]
    ]
    if len(labels) != 459 or wrong:
        raise ValueError(
            f"{path}: expected the 459 PASCAL-Context classes ('<id>: <name>' lines), got "
            f"{len(labels)}; ids of the 59 classes that differ: {wrong[:5]}"
        )


def _load_label_map(path: Path) -> np.ndarray:
    try:
        from scipy.io import loadmat
    except ImportError:
        raise ImportError(
            "reading PASCAL-Context .mat files needs scipy: pip install scipy "
            "(or pip install -e '.[prepare]')"
        ) from None
    mat = loadmat(str(path))
    if "LabelMap" not in mat:
        raise ValueError(f"{path} has no LabelMap")
    return np.asarray(mat["LabelMap"])


def _context_val_list(voc2010: Path, val_list: str | Path | None) -> Path:
    """``val_list``, else ``pascalcontext_val.txt``, else VOC2010's ``ImageSets/Main/val.txt``
    (PASCAL-Context uses VOC2010's train/val split)."""
    if val_list is not None:
        return Path(val_list)
    default = voc2010 / "pascalcontext_val.txt"
    main = voc2010 / "ImageSets" / "Main" / "val.txt"
    return main if not default.is_file() and main.is_file() else default


def prepare_pascal_context(
    voc2010_root: str | Path, val_list: str | Path | None = None, progress: bool = True
) -> dict[str, Path]:
    """``annotations_detectron2/{pc59_val,pc60_val,pc459_val}`` under ``voc2010_root``
    (VOCdevkit/VOC2010); returns ``{"59": folder, "60": ..., "459": ...}``."""
    voc = Path(voc2010_root)
    ids_file = _context_val_list(voc, val_list)
    _require(
        {
            "image dir": voc / "JPEGImages",
            "PASCAL-Context annotation dir": voc / "trainval",
            "PASCAL-Context labels.txt": voc / "labels.txt",
            "val id list": ids_file,
        },
        DOWNLOADS["context"],
    )
    _check_context_labels(voc / "labels.txt")
    ids = read_id_list(ids_file)
    mats = [str(voc / "trainval" / f"{i}.mat") for i in ids]
    jpgs = [str(voc / "JPEGImages" / f"{i}.jpg") for i in ids]
    _require_each("PASCAL-Context files", mats + jpgs, DOWNLOADS["context"])
    outs = {k: voc / "annotations_detectron2" / f"pc{k}_val" for k in ("59", "60", "459")}
    with _output_folders(outs["59"], outs["60"], outs["459"]) as (t59, t60, t459):
        for i in _progress(ids, "PASCAL Context", progress):
            label_map = _load_label_map(voc / "trainval" / f"{i}.mat")
            _save(pascal_context_59_labels(label_map), t59 / f"{i}.png", "PNG")
            _save(pascal_context_60_labels(label_map), t60 / f"{i}.png", "PNG")
            _save(pascal_context_459_labels(label_map), t459 / f"{i}.tif", "TIFF")
    return outs


# ---- PASCAL VOC 2012 ----------------------------------------------------------------------------


def prepare_voc(voc2012_root: str | Path, progress: bool = True) -> tuple[Path, Path, Path]:
    """``annotations_detectron2/val`` (VOC-20), ``annotations_detectron2_voc21/val`` (VOC-21) and
    ``annotations_detectron2_bg/val`` (VOC-20b) under ``voc2012_root`` (VOCdevkit/VOC2012);
    returns the three folders in this order."""
    voc = Path(voc2012_root)
    split = voc / "ImageSets" / "Segmentation" / "val.txt"
    _require(
        {
            "image dir": voc / "JPEGImages",
            "SegmentationClass dir": voc / "SegmentationClass",
            "val id list": split,
        },
        DOWNLOADS["voc"],
    )
    ids = read_id_list(split)
    pngs = [str(voc / "SegmentationClass" / f"{i}.png") for i in ids]
    jpgs = [str(voc / "JPEGImages" / f"{i}.jpg") for i in ids]
    _require_each("VOC files", pngs + jpgs, DOWNLOADS["voc"])
    out20 = voc / "annotations_detectron2" / "val"
    out21 = voc / "annotations_detectron2_voc21" / "val"
    out20b = voc / "annotations_detectron2_bg" / "val"
    with _output_folders(out20, out21, out20b) as (t20, t21, t20b):
        for i in _progress(ids, "PASCAL VOC", progress):
            raw = _read_index_png(voc / "SegmentationClass" / f"{i}.png")
            _save(voc_20_labels(raw), t20 / f"{i}.png", "PNG")
            _save(voc_21_labels(raw), t21 / f"{i}.png", "PNG")
            _save(voc_20b_labels(raw), t20b / f"{i}.png", "PNG")
    return out20, out21, out20b


def preparation_parser(description: str, holds: str) -> argparse.ArgumentParser:
    """The command line the ``datasets/prepare_*.py`` scripts share: ``--root`` (the folder that
    holds ``holds``; default ``$DETECTRON2_DATASETS``, else ``datasets``) and ``--no-progress``."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--root",
        default=os.getenv("DETECTRON2_DATASETS", "datasets"),
        help=f"folder that holds {holds}",
    )
    parser.add_argument("--no-progress", action="store_true")
    return parser
