"""Semantic-segmentation benchmarks: preparation scripts on tiny files in the official raw layouts
(COCO-Stuff stuffthingmaps, ADEChallengeData2016, full ADE20K with index_ade20k.pkl, PASCAL-Context
.mat files, VOC palette PNGs), then registration, dataset dicts, metadata and label values."""

from __future__ import annotations

import importlib.util
import json
import pickle
import runpy
from pathlib import Path

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from densevlm_d2.data import VOCABULARY_DIR, dataset_vocabulary, shipped_vocabulary
from densevlm_d2.data.datasets import DatasetLayoutError
from densevlm_d2.data.datasets import prepare_sem_seg as prep
from densevlm_d2.data.datasets.sem_seg import (
    SEM_SEG_BENCHMARKS,
    register_sem_seg,
    register_sem_seg_benchmarks,
)

SCRIPTS = Path(__file__).resolve().parents[2] / "datasets"
PREFIX = "test_semseg_"
H, W = 20, 30

# registered key -> (classes, ignore label, background index, label extension)
EXPECTED = {
    "coco_stuff_171_train": (171, 255, None, "png"),
    "coco_stuff_171_val": (171, 255, None, "png"),
    "coco_object_val": (81, 255, 0, "png"),
    "ade20k_150_val": (150, 255, None, "png"),
    "ade20k_847_val": (847, 65535, None, "tif"),
    "pascal_context_59_val": (59, 255, None, "png"),
    "pascal_context_459_val": (459, 65535, None, "tif"),
    "pascal_context_60_val": (60, 255, 0, "png"),
    "voc_20_val": (20, 255, None, "png"),
    "voc_21_val": (21, 255, 0, "png"),
    "voc_20b_val": (21, 255, 20, "png"),
}


def _jpg(path: Path, h: int = H, w: int = W) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8)).save(path)


def _grey_png(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels.astype(np.uint8)).save(path)


def _label_map(values: list[int]) -> np.ndarray:
    """An H x W map whose first row holds ``values`` (one per column) and the rest ``values[0]``."""
    out = np.full((H, W), values[0], np.int64)
    out[0, : len(values)] = values
    return out


def _read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


# ---- raw layouts --------------------------------------------------------------------------------

# stuffthingmaps pixel (= COCO id - 1): person 0, toothbrush 89 (id 90), unused id 12 (11), unused
# id 91 (90), banner 91 (id 92), wood 181 (id 182), unlabelled 255
COCO_RAW = [0, 89, 11, 90, 91, 181, 255]
COCO_171 = [0, 79, 255, 255, 80, 170, 255]
COCO_OBJECT = [1, 80, 0, 0, 0, 0, 0]


def _write_coco(root: Path) -> None:
    coco = root / "coco"
    for split, stems in (("val2017", ["000000000139", "000000000285"]), ("train2017", ["9"])):
        for stem in stems:
            _jpg(coco / split / f"{stem}.jpg")
            _grey_png(coco / "stuffthingmaps" / split / f"{stem}.png", _label_map(COCO_RAW))


ADE150_RAW = [0, 1, 150, 3]
ADE150 = [255, 0, 149, 2]


def _write_ade150(root: Path) -> None:
    ade = root / "ADEChallengeData2016"
    _jpg(ade / "images/validation/ADE_val_00000001.jpg")
    _grey_png(ade / "annotations/validation/ADE_val_00000001.png", _label_map(ADE150_RAW))


def _ade847_raw_and_expected() -> tuple[list[int], list[int]]:
    """Full-ADE20K class values and their 847 labels: wall (index 0), sky (2), the classes at
    indices 300 and 846, unlabelled (0) and a value of no 847 class."""
    ids = shipped_vocabulary("ade20k_847").extra["dataset_ids"]
    unused = next(v for v in range(1, 5000) if v not in ids)
    return [ids[0], ids[2], ids[300], ids[846], 0, unused], [0, 2, 300, 846, 65535, 65535]


def _seg_png(classes: np.ndarray) -> np.ndarray:
    """The RGB encoding of full-ADE20K ``*_seg.png``: R = class // 256 * 10 + (0..9), G = class
    % 256, B = instance."""
    rgb = np.zeros((*classes.shape, 3), np.uint8)
    rgb[..., 0] = classes // 256 * 10 + (np.arange(classes.size).reshape(classes.shape) % 10)
    rgb[..., 1] = classes % 256
    rgb[..., 2] = 7
    return rgb


def _write_ade_full(root: Path) -> None:
    ade = root / "ADE20K_2021_17_01"
    raw, _ = _ade847_raw_and_expected()
    folders = [
        "ADE20K_2021_17_01/images/ADE/training/urban/street",
        "ADE20K_2021_17_01/images/ADE/validation/urban/street",
        "ADE20K_2021_17_01/images/ADE/validation/home_or_hotel/bedroom",
    ]
    names = ["ADE_train_00000001.jpg", "ADE_val_00000001.jpg", "ADE_val_00000002.jpg"]
    for folder, name in zip(folders[1:], names[1:], strict=True):
        image = root / folder / name
        _jpg(image, 24, 36)
        classes = np.full((24, 36), raw[0], np.int64)
        classes[0, : len(raw)] = raw
        seg = image.with_name(image.stem + "_seg.png")
        Image.fromarray(_seg_png(classes)).save(seg)
    index = {  # the keys of the release's index_ade20k.pkl (only folder and filename are read)
        "filename": names,
        "folder": folders,
        "scene": ["/street", "/street", "/bedroom"],
        "objectnames": ["-", "wall", "sky"],
        "objectIsPart": np.zeros((3, 3), np.uint8),
        "objectPresence": np.zeros((3, 3), np.uint8),
        "objectcounts": np.zeros(3, np.int64),
        "proportionClassIsPart": np.zeros(3),
        "wordnet_found": [],
        "wordnet_level1": [],
        "wordnet_synset": [],  # fmt: skip
        "wordnet_hypernym": [],
        "wordnet_gloss": [],
        "wordnet_synonyms": [],  # fmt: skip
        "wordnet_frequency": [],
        "description": [],  # fmt: skip
    }
    with open(ade / "index_ade20k.pkl", "wb") as f:
        pickle.dump(index, f)


# LabelMap values (labels.txt ids): aeroplane 2, wood 458, table 397, accordion 1 (not one of the
# 59), unlabelled 0, wool 459 (not one of the 59)
CONTEXT_RAW = [2, 458, 397, 1, 0, 459]
CONTEXT_59 = [0, 58, 49, 255, 255, 255]
CONTEXT_60 = [1, 59, 50, 0, 0, 0]
CONTEXT_459 = [1, 457, 396, 0, 65535, 458]
CONTEXT_VAL = ["2008_000002", "2008_000003"]


HAVE_SCIPY = importlib.util.find_spec("scipy") is not None
needs_scipy = pytest.mark.skipif(not HAVE_SCIPY, reason="PASCAL-Context's .mat files need scipy")


def _write_context(root: Path) -> None:
    from scipy.io import savemat

    voc = root / "VOCdevkit/VOC2010"
    (voc / "trainval").mkdir(parents=True)
    names = shipped_vocabulary("pascal_context_459").names
    (voc / "labels.txt").write_text("".join(f"{i}: {n}\n" for i, n in enumerate(names, 1)))
    (voc / "pascalcontext_val.txt").write_text("\n".join(CONTEXT_VAL))
    for i in [*CONTEXT_VAL, "2008_000007"]:  # the last: a training image
        _jpg(voc / "JPEGImages" / f"{i}.jpg")
        label_map = _label_map(CONTEXT_RAW).astype(np.uint16)
        savemat(voc / "trainval" / f"{i}.mat", {"LabelMap": label_map}, do_compression=True)


def _voc_palette() -> list[int]:
    palette = []
    for k in range(256):
        rgb, c = [0, 0, 0], k
        for shift in range(7, -1, -1):
            for ch in range(3):
                rgb[ch] |= ((c >> ch) & 1) << shift
            c >>= 3
        palette += rgb
    return palette


VOC_RAW = [0, 1, 20, 255, 15]
VOC_20 = [255, 0, 19, 255, 14]
VOC_21 = [0, 1, 20, 255, 15]
VOC_20B = [20, 0, 19, 255, 14]
VOC_VAL = ["2007_000033", "2007_000042"]


def _write_voc(root: Path) -> None:
    voc = root / "VOCdevkit/VOC2012"
    (voc / "SegmentationClass").mkdir(parents=True)
    (voc / "ImageSets/Segmentation").mkdir(parents=True)
    (voc / "ImageSets/Segmentation/val.txt").write_text("".join(f"{i}\n" for i in VOC_VAL))
    for i in [*VOC_VAL, "2007_000032"]:  # the last: a training image
        _jpg(voc / "JPEGImages" / f"{i}.jpg")
        png = Image.frombytes("P", (W, H), _label_map(VOC_RAW).astype(np.uint8).tobytes())
        png.putpalette(_voc_palette())
        png.save(voc / "SegmentationClass" / f"{i}.png")


def _run(script: str, root: Path, *args: str) -> None:
    runpy.run_path(str(SCRIPTS / script))["main"](["--root", str(root), "--no-progress", *args])


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Every source in its raw layout, prepared by the CLI scripts, registered with PREFIX."""
    root = tmp_path_factory.mktemp("sem_seg")
    for write in (_write_coco, _write_ade150, _write_ade_full, _write_voc):
        write(root)
    _run("prepare_coco_stuff_sem_seg.py", root)
    _run("prepare_ade20k_sem_seg.py", root)
    _run("prepare_ade20k_full_sem_seg.py", root)
    _run("prepare_voc.py", root)
    if HAVE_SCIPY:  # scipy is in requirements.txt; an install without the "prepare" extra lacks it
        _write_context(root)
        _run("prepare_pascal_context.py", root)
    register_sem_seg_benchmarks(str(root), prefix=PREFIX)
    return root


def _first_row(path: Path, n: int) -> list[int]:
    return _read(path)[0, :n].tolist()


# ---- tests --------------------------------------------------------------------------------------


def test_label_mappings():
    assert prep.coco_stuff_171_labels(np.array(COCO_RAW)).tolist() == COCO_171
    assert prep.coco_object_labels(np.array(COCO_RAW)).tolist() == COCO_OBJECT
    assert prep.ade20k_150_labels(np.array(ADE150_RAW)).tolist() == ADE150
    raw, expected = _ade847_raw_and_expected()
    assert prep.ade20k_847_labels(np.array(raw)).tolist() == expected
    assert prep.ade20k_full_classes(_seg_png(np.array([[raw[0], raw[3]]]))).tolist() == [raw[::3]]
    assert prep.pascal_context_59_labels(np.array(CONTEXT_RAW)).tolist() == CONTEXT_59
    assert prep.pascal_context_60_labels(np.array(CONTEXT_RAW)).tolist() == CONTEXT_60
    assert prep.pascal_context_459_labels(np.array(CONTEXT_RAW)).tolist() == CONTEXT_459
    assert prep.voc_20_labels(np.array(VOC_RAW)).tolist() == VOC_20
    assert prep.voc_21_labels(np.array(VOC_RAW)).tolist() == VOC_21
    assert prep.voc_20b_labels(np.array(VOC_RAW)).tolist() == VOC_20B
    # every other palette index (none in VOC) is ignored, as CAT-Seg's table leaves it
    assert prep.voc_20b_labels(np.array([21, 254])).tolist() == [255, 255]
    assert prep.ade20k_847_labels(np.zeros((2, 2), np.int32)).dtype == np.uint16


def test_vocabularies_and_metadata(root):
    for key, (n, ignore, background, _) in EXPECTED.items():
        name = f"{PREFIX}{key}_sem_seg"
        meta = MetadataCatalog.get(name)
        vocabulary = dataset_vocabulary(name)
        assert len(meta.stuff_classes) == n and len(vocabulary) == n, key
        assert (meta.ignore_label, vocabulary.background_index) == (ignore, background), key
        assert meta.evaluator_type == "sem_seg" and vocabulary.source == name
        # the names are those of the benchmark's shipped class-list file, which says its source
        file = VOCABULARY_DIR / f"{key.rsplit('_', 1)[0]}.json"
        assert vocabulary.names == shipped_vocabulary(file.stem).names, key
        assert "source" in json.loads(file.read_text())
        display = vocabulary.display_names
        assert len(display) == n and "," not in "".join(display)
        if background is not None:
            assert display[background] == "background"
    voc21 = MetadataCatalog.get(f"{PREFIX}voc_21_val_sem_seg")
    assert voc21.stuff_classes[0].startswith("sky, wall, tree")  # SCLIP's background words
    assert voc21.stuff_classes[4] == "ship"
    assert dataset_vocabulary(f"{PREFIX}voc_21_val_sem_seg").display_names[20] == (
        "television monitor"
    )
    assert MetadataCatalog.get(f"{PREFIX}coco_object_val_sem_seg").stuff_classes[80] == "toothbrush"
    coco = MetadataCatalog.get(f"{PREFIX}coco_stuff_171_val_sem_seg").stuff_classes
    assert (coco[0], coco[79], coco[80], coco[170]) == ("person", "toothbrush", "banner", "wood")
    ade847 = MetadataCatalog.get(f"{PREFIX}ade20k_847_val_sem_seg").stuff_classes
    assert ade847[:3] == ["wall", "building, edifice", "sky"]
    assert len(SEM_SEG_BENCHMARKS) == 10 and all(
        n.endswith("_val_sem_seg") for n in SEM_SEG_BENCHMARKS
    )
    # CAT-Seg's table order: A-847, PC-459, A-150, PC-59, PAS-20, PAS-20b
    assert SEM_SEG_BENCHMARKS.index("densevlm_voc_20b_val_sem_seg") == 5
    assert set(SEM_SEG_BENCHMARKS) <= set(DatasetCatalog.list())  # registered on import


CONTEXT_39 = ["bag", "bed", "bench", "book", "building", "cabinet", "ceiling", "cloth", "computer",
              "cup", "door", "fence", "floor", "flower", "food", "grass", "ground", "keyboard",
              "light", "mountain", "mouse", "curtain", "platform", "sign", "plate", "road", "rock",
              "shelves", "sidewalk", "sky", "snow", "bedclothes", "track", "tree", "truck", "wall",
              "water", "window", "wood"]  # fmt: skip


def test_voc_20b_metadata(root):
    meta = MetadataCatalog.get(f"{PREFIX}voc_20b_val_sem_seg")
    vocabulary = dataset_vocabulary(f"{PREFIX}voc_20b_val_sem_seg")
    # CAT-Seg's own VOC spellings (VOC-20 keeps SCLIP's: the two benchmarks come from two papers)
    voc20 = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
             "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep",
             "sofa", "train", "tvmonitor"]  # fmt: skip
    assert meta.stuff_classes == [*voc20, "background"] and vocabulary.background_index == 20
    assert vocabulary.query_names == (*voc20, *CONTEXT_39) and len(vocabulary.query_names) == 59
    assert vocabulary.surplus_index == 20
    assert vocabulary.queries.names == vocabulary.query_names
    assert vocabulary.display_names[:5] == ("aeroplane", "bicycle", "bird", "boat", "bottle")
    shipped = shipped_vocabulary("voc_20b")
    assert (shipped.names, shipped.query_names) == (vocabulary.names, vocabulary.query_names)
    assert "CAT-Seg" in shipped.extra["source"]
    # the other benchmarks have no query list: the model is asked about the scored classes
    voc21 = dataset_vocabulary(f"{PREFIX}voc_21_val_sem_seg")
    assert voc21.query_names is None and voc21.surplus_index is None
    assert voc21.queries is voc21


def test_register_checks_query_classes():
    """The query list starts with the scored classes but the last, in order, and holds more names;
    every query after them counts as the last class (no longer a parameter: derived)."""
    classes = ["cat", "dog", "background"]
    scored_first = "query_names must start with the first 2 class names in order and hold more"
    with pytest.raises(ValueError, match=f"test_semseg_q: .*{scored_first}.*got 2 names"):
        register_sem_seg("test_semseg_q", "i", "g", classes, query_classes=["cat", "dog"])
    with pytest.raises(ValueError, match=f"test_semseg_q: .*{scored_first}.*got 3 names"):
        register_sem_seg("test_semseg_q", "i", "g", classes, query_classes=["dog", "cat", "sky"])
    with pytest.raises(TypeError, match="surplus_prediction_class"):
        register_sem_seg("test_semseg_q", "i", "g", classes, query_classes=["cat", "dog", "sky"],
                         surplus_prediction_class=2)  # fmt: skip
    assert "test_semseg_q" not in DatasetCatalog.list()
    register_sem_seg("test_semseg_q", "i", "g", classes, background_index=2,
                     query_classes=("cat", "dog", "sky", "wall"))  # fmt: skip
    vocabulary = dataset_vocabulary("test_semseg_q")
    assert vocabulary.query_names == ("cat", "dog", "sky", "wall")
    assert vocabulary.surplus_index == 2  # queries 2 and 3 ("sky", "wall") count as class 2


def _dicts(key: str) -> list[dict]:
    return DatasetCatalog.get(f"{PREFIX}{key}_sem_seg")


def test_coco(root):
    d = _dicts("coco_stuff_171_val")
    assert [r["image_id"] for r in d] == ["000000000139", "000000000285"]
    assert d[0]["file_name"] == str(root / "coco/val2017/000000000139.jpg")
    assert d[0]["sem_seg_file_name"] == str(
        root / "coco/stuffthingmaps_detectron2/val2017/000000000139.png"
    )
    assert _first_row(Path(d[0]["sem_seg_file_name"]), 7) == COCO_171
    assert [r["image_id"] for r in _dicts("coco_stuff_171_train")] == ["9"]
    (obj, _) = _dicts("coco_object_val")
    assert obj["sem_seg_file_name"].endswith("coco/coco_object_detectron2/val2017/000000000139.png")
    assert _first_row(Path(obj["sem_seg_file_name"]), 7) == COCO_OBJECT
    assert not (root / "coco/coco_object_detectron2/train2017").exists()


def test_ade20k_150(root):
    (d,) = _dicts("ade20k_150_val")
    assert d["image_id"] == "ADE_val_00000001"
    assert d["file_name"] == str(
        root / "ADEChallengeData2016/images/validation/ADE_val_00000001.jpg"
    )
    assert _first_row(Path(d["sem_seg_file_name"]), 4) == ADE150
    assert _read(Path(d["sem_seg_file_name"]))[5, 5] == 255


def test_ade20k_847(root):
    d = _dicts("ade20k_847_val")
    assert [r["image_id"] for r in d] == ["ADE_val_00000001", "ADE_val_00000002"]
    ade = root / "ADE20K_2021_17_01"
    assert d[0]["file_name"] == str(ade / "images_detectron2/validation/ADE_val_00000001.jpg")
    assert d[0]["sem_seg_file_name"] == str(
        ade / "annotations_detectron2/validation/ADE_val_00000001.tif"
    )
    labels = _read(Path(d[0]["sem_seg_file_name"]))
    raw, expected = _ade847_raw_and_expected()
    assert labels.dtype == np.uint16 and labels.shape == (24, 36)
    assert labels[0, : len(raw)].tolist() == expected
    assert Image.open(d[0]["file_name"]).size == (36, 24)  # shorter side under 512: kept
    assert not (ade / "images_detectron2/validation/ADE_train_00000001.jpg").exists()


def test_ade20k_847_resizes_the_shorter_side(tmp_path):
    _write_ade_full(tmp_path)
    ade = tmp_path / "ADE20K_2021_17_01"
    images, labels = prep.prepare_ade20k_847(ade, max_size=16, progress=False)
    assert Image.open(images / "ADE_val_00000001.jpg").size == (24, 16)
    out = _read(labels / "ADE_val_00000001.tif")
    assert out.shape == (16, 24)
    classes = prep.ade20k_full_classes(np.asarray(Image.open(next(ade.rglob("*_seg.png")))))
    rows, cols = (
        np.floor(np.arange(16) * 1.5).astype(int),
        np.floor(np.arange(24) * 1.5).astype(int),
    )
    assert (out == prep.ade20k_847_labels(classes[rows][:, cols])).all()  # nearest, OpenCV's grid
    image = np.random.default_rng(0).integers(0, 255, (24, 36, 3), np.uint8)
    try:
        import cv2
    except ImportError:
        return
    ref = cv2.resize(image, (24, 16), interpolation=cv2.INTER_LINEAR).astype(int)
    assert np.abs(prep._bilinear_numpy(image, (16, 24)).astype(int) - ref).max() <= 1


@needs_scipy
def test_pascal_context(root):
    voc = root / "VOCdevkit/VOC2010"
    for key, folder, ext, expected in (
        ("pascal_context_59_val", "pc59_val", "png", CONTEXT_59),
        ("pascal_context_60_val", "pc60_val", "png", CONTEXT_60),
        ("pascal_context_459_val", "pc459_val", "tif", CONTEXT_459),
    ):
        d = _dicts(key)
        assert [r["image_id"] for r in d] == CONTEXT_VAL, key  # not the training image
        assert d[0]["file_name"] == str(voc / "JPEGImages/2008_000002.jpg")
        assert d[0]["sem_seg_file_name"] == str(
            voc / "annotations_detectron2" / folder / f"2008_000002.{ext}"
        )
        assert _first_row(Path(d[0]["sem_seg_file_name"]), 6) == expected, key
    assert _read(voc / "annotations_detectron2/pc459_val/2008_000002.tif").dtype == np.uint16


def test_voc(root):
    voc = root / "VOCdevkit/VOC2012"
    for key, folder, expected in (
        ("voc_20_val", "annotations_detectron2", VOC_20),
        ("voc_21_val", "annotations_detectron2_voc21", VOC_21),
        ("voc_20b_val", "annotations_detectron2_bg", VOC_20B),
    ):
        d = _dicts(key)
        assert [r["image_id"] for r in d] == VOC_VAL, key
        assert d[1]["sem_seg_file_name"] == str(voc / folder / "val/2007_000042.png")
        assert _first_row(Path(d[1]["sem_seg_file_name"]), 5) == expected, key
        assert Image.open(d[1]["sem_seg_file_name"]).mode == "L"


@pytest.mark.parametrize(
    "prepare, missing",
    [
        (lambda r: prep.prepare_coco_stuff(r / "coco"), ["stuffthingmaps/val2017", "train2017"]),
        (lambda r: prep.prepare_ade20k_150(r / "ADE"), ["annotations/validation", "ADEchallenge"]),
        (lambda r: prep.prepare_ade20k_847(r / "ADE"), ["index_ade20k.pkl", "images/ADE/valid"]),
        (
            lambda r: prep.prepare_pascal_context(r / "VOC2010"),
            ["trainval", "labels.txt", "pascalcontext_val.txt", "JPEGImages", "trainval.tar.gz"],
        ),
        (lambda r: prep.prepare_voc(r / "VOC2012"), ["SegmentationClass", "val.txt", "11-May"]),
    ],
)
def test_missing_raw_files_are_named(tmp_path, prepare, missing):
    with pytest.raises(FileNotFoundError) as e:
        prepare(tmp_path)
    for text in missing:
        assert text in str(e.value)


@needs_scipy
def test_missing_files_listed_by_a_split(tmp_path):
    _write_voc(tmp_path)
    (tmp_path / "VOCdevkit/VOC2012/SegmentationClass/2007_000042.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"(?s)1 VOC files missing.*2007_000042\.png"):
        prep.prepare_voc(tmp_path / "VOCdevkit/VOC2012", progress=False)
    _write_context(tmp_path)
    (tmp_path / "VOCdevkit/VOC2010/trainval/2008_000003.mat").unlink()
    with pytest.raises(FileNotFoundError, match=r"2008_000003\.mat"):
        prep.prepare_pascal_context(tmp_path / "VOCdevkit/VOC2010", progress=False)


@needs_scipy
def test_wrong_context_labels_file(tmp_path):
    _write_context(tmp_path)
    (tmp_path / "VOCdevkit/VOC2010/labels.txt").write_text("1: accordion\n2: boat\n")
    with pytest.raises(ValueError, match="459 PASCAL-Context classes"):
        prep.prepare_pascal_context(tmp_path / "VOCdevkit/VOC2010", progress=False)


def test_missing_prepared_folders(tmp_path):
    names = register_sem_seg_benchmarks(str(tmp_path), prefix="test_semseg_empty_")
    assert len(names) == 11
    with pytest.raises(DatasetLayoutError) as e:
        DatasetCatalog.get("test_semseg_empty_pascal_context_459_val_sem_seg")
    assert str(tmp_path / "VOCdevkit/VOC2010/JPEGImages") in str(e.value)
    assert "prepare_pascal_context.py" in str(e.value) and "pc459_val" in str(e.value)
    (tmp_path / "coco/val2017").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError) as e:
        DatasetCatalog.get("test_semseg_empty_coco_object_val_sem_seg")
    assert str(tmp_path / "coco/coco_object_detectron2/val2017") in str(e.value)


def _folders(tmp_path: Path, images: list[str], labels: list[str]) -> tuple[str, str]:
    for stem in images:
        _jpg(tmp_path / "img" / f"{stem}.jpg")
    for stem in labels:
        _grey_png(tmp_path / "gt" / f"{stem}.png", np.zeros((H, W)))
    (tmp_path / "img").mkdir(exist_ok=True)
    (tmp_path / "gt").mkdir(exist_ok=True)
    return str(tmp_path / "img"), str(tmp_path / "gt")


def test_labels_without_image_and_images_without_labels(tmp_path):
    img, gt = _folders(tmp_path, ["a", "b"], ["a", "b", "c"])
    register_sem_seg("test_semseg_no_image", img, gt, ["x", "y"], layout="LAYOUT")
    with pytest.raises(
        DatasetLayoutError, match=r"1 images not found in .*img: c\.jpg(.|\n)*LAYOUT"
    ):
        DatasetCatalog.get("test_semseg_no_image")
    img, gt = _folders(tmp_path / "2", ["a", "b"], ["a"])
    register_sem_seg("test_semseg_shared", img, gt, ["x", "y"])
    assert [r["image_id"] for r in DatasetCatalog.get("test_semseg_shared")] == ["a"]
    register_sem_seg("test_semseg_strict", img, gt, ["x", "y"], all_images_annotated=True)
    with pytest.raises(DatasetLayoutError, match=r"1 label files not found in .*gt: b\.png"):
        DatasetCatalog.get("test_semseg_strict")
    register_sem_seg("test_semseg_list", img, gt, ["x", "y"], image_list=["a", "b"])
    with pytest.raises(DatasetLayoutError, match=r"label files not found .*b\.png"):
        DatasetCatalog.get("test_semseg_list")
    img, gt = _folders(tmp_path / "3", ["a"], [])
    register_sem_seg("test_semseg_empty_gt", img, gt, ["x", "y"])
    with pytest.raises(DatasetLayoutError, match=r"no label files \*\.png"):
        DatasetCatalog.get("test_semseg_empty_gt")


def test_register_checks_the_ignore_label():
    with pytest.raises(ValueError, match="ignore_label 255 is a class index"):
        register_sem_seg("test_semseg_bad", "i", "g", [f"c{i}" for i in range(300)])
    with pytest.raises(ValueError, match="background_index 3"):
        register_sem_seg("test_semseg_bad", "i", "g", ["a", "b"], background_index=3)


@needs_scipy
def test_context_val_ids_default_to_voc2010_val(tmp_path):
    _write_context(tmp_path)
    voc = tmp_path / "VOCdevkit/VOC2010"
    (voc / "pascalcontext_val.txt").unlink()
    (voc / "ImageSets/Main").mkdir(parents=True)
    (voc / "ImageSets/Main/val.txt").write_text("2008_000003\n")
    outs = prep.prepare_pascal_context(voc, progress=False)
    assert [p.name for p in outs["459"].iterdir()] == ["2008_000003.tif"]
