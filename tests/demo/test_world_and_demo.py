"""The demo world's files follow the COCO panoptic conventions; a reduced demo runs end to end."""

from __future__ import annotations

import csv
import hashlib
import json
import runpy
from pathlib import Path

import numpy as np
import pytest
from panopticapi.utils import rgb2id
from PIL import Image

import demo.register  # noqa: F401  (the world's datasets under $DETECTRON2_DATASETS/demo_world)
from demo.figures import format_table
from demo.pipeline import MODELS, missing_requirements
from demo.world import CATEGORIES, STUFF, THINGS, WorldSpec, write_world
from densevlm_d2.data import dataset_vocabulary
from densevlm_d2.data.datasets import register_panoptic
from densevlm_d2.data.mappers import RegionEvalMapper

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    write_world(str(root), WorldSpec(seed=3, num_train=8, num_val=4), progress=False)
    return root


def test_panoptic_format(world):
    data = json.loads((world / "panoptic_val.json").read_text())
    assert data["categories"] == CATEGORIES
    assert [c["name"] for c in CATEGORIES] == list(THINGS) + list(STUFF)
    cat_ids = {c["id"] for c in CATEGORIES}
    assert [im["id"] for im in data["images"]] == [a["image_id"] for a in data["annotations"]]
    for image, ann in zip(data["images"], data["annotations"], strict=True):
        with Image.open(world / "val" / image["file_name"]) as im:
            assert im.size == (image["width"], image["height"]) and im.mode == "RGB"
        png = np.asarray(Image.open(world / "panoptic_val" / ann["file_name"]))
        assert png.dtype == np.uint8 and png.shape == (image["height"], image["width"], 3)
        ids = rgb2id(png)
        segs = ann["segments_info"]
        assert len({s["id"] for s in segs}) == len(segs)  # unique segment ids
        assert set(np.unique(ids).tolist()) == {s["id"] for s in segs}  # every pixel labelled
        for s in segs:
            mask = ids == s["id"]
            ys, xs = np.nonzero(mask)
            assert s["area"] == int(mask.sum())
            assert s["bbox"] == [
                int(xs.min()),
                int(ys.min()),
                int(xs.max() - xs.min() + 1),
                int(ys.max() - ys.min() + 1),
            ]
            assert s["category_id"] in cat_ids and s["iscrowd"] == 0
        assert any(s["category_id"] >= 101 for s in segs)  # a background in every scene
    captions = list(csv.DictReader(open(world / "captions_val.csv")))
    assert [Path(r["filepath"]).name for r in captions] == [
        im["file_name"] for im in data["images"]
    ]
    crops = list(csv.DictReader(open(world / "crops_train.csv")))
    train = json.loads((world / "panoptic_train.json").read_text())
    assert len(crops) == sum(len(a["segments_info"]) for a in train["annotations"])
    assert all(r["title"].startswith("a photo of a ") for r in crops)


def test_captions_name_things_far_more_than_backgrounds(tmp_path):
    write_world(str(tmp_path), WorldSpec(seed=0, num_train=200, num_val=1), progress=False)
    titles = [r["title"] for r in csv.DictReader(open(tmp_path / "captions_train.csv"))]
    with_thing = sum(any(t in title for t in THINGS) for title in titles)
    with_stuff = sum(any(s in title for s in STUFF) for title in titles)
    assert with_thing > 0.9 * len(titles) and with_stuff < 0.25 * len(titles)


def test_deterministic_from_the_seed(tmp_path):
    digests = []
    for name in ("a", "b"):
        write_world(str(tmp_path / name), WorldSpec(seed=5, num_train=3, num_val=2), progress=False)
        h = hashlib.sha256()
        for f in sorted((tmp_path / name).rglob("*.*")):
            if f.suffix in (".json", ".png", ".jpg"):
                h.update(f.read_bytes())
        digests.append(h.hexdigest())
    assert digests[0] == digests[1]


def test_semantic_view_matches_the_panoptic_annotations(world):
    from detectron2.data import MetadataCatalog

    from densevlm_d2.data.datasets.panoptic_semantic import panoptic_to_semantic

    classes = panoptic_to_semantic(
        world / "panoptic_val.json", world / "panoptic_val", world / "sem_seg_val"
    )
    # the registered view's classes are the region evaluation's, in the same order
    assert tuple(classes) == dataset_vocabulary("densevlm_demo_world_val").names
    assert classes == MetadataCatalog.get("densevlm_demo_world_val_sem_seg").stuff_classes
    _assert_labels_match_panoptic(world, "val", classes)


def _assert_labels_match_panoptic(world: Path, split: str, classes: list[str]) -> dict:
    """Every segment of ``split``'s panoptic annotations has its class's index in
    ``sem_seg_<split>/``, and every pixel is labelled; returns the panoptic json."""
    data = json.loads((world / f"panoptic_{split}.json").read_text())
    for ann in data["annotations"]:
        ids = rgb2id(np.asarray(Image.open(world / f"panoptic_{split}" / ann["file_name"])))
        label = np.asarray(Image.open(world / f"sem_seg_{split}" / ann["file_name"]))
        for seg in ann["segments_info"]:
            name = next(c["name"] for c in CATEGORIES if c["id"] == seg["category_id"])
            assert (label[ids == seg["id"]] == classes.index(name)).all()
        assert (label < len(classes)).all()  # every pixel of the world is labelled
    return data


def test_train_semantic_view_is_registered_and_matches_the_panoptic_annotations(world):
    from detectron2.data import MetadataCatalog

    from demo.pipeline import write_semantic_views
    from densevlm_d2.data.datasets.sem_seg import load_sem_seg_dicts

    train_view = MetadataCatalog.get("densevlm_demo_world_train_sem_seg")
    val_view = MetadataCatalog.get("densevlm_demo_world_val_sem_seg")
    classes = train_view.stuff_classes
    assert classes == val_view.stuff_classes
    assert tuple(classes) == dataset_vocabulary("densevlm_demo_world_val").names
    assert dataset_vocabulary("densevlm_demo_world_train_sem_seg").names == tuple(classes)
    assert Path(train_view.image_root).name == "train"
    assert Path(train_view.sem_seg_root).name == "sem_seg_train"
    assert Path(train_view.sem_seg_root).parent == Path(val_view.sem_seg_root).parent
    # what make demo writes: both views, each with its .done marker
    folders = write_semantic_views(world)
    assert folders == [world / "sem_seg_train", world / "sem_seg_val"]
    assert all((f / ".done").is_file() for f in folders)
    # the registered view's records, for this world: every training image has its labels
    records = load_sem_seg_dicts(
        str(world / "train"), str(world / "sem_seg_train"), all_images_annotated=True
    )
    data = _assert_labels_match_panoptic(world, "train", classes)
    assert len(records) == len(data["annotations"]) == 8
    # a folder with its marker is kept as it is; without the marker it is written again
    first = world / "sem_seg_train" / data["annotations"][0]["file_name"]
    first.unlink()
    write_semantic_views(world)
    assert not first.exists()
    (world / "sem_seg_train" / ".done").unlink()
    write_semantic_views(world)
    assert first.is_file() and (world / "sem_seg_train" / ".done").is_file()


def test_registered_and_mapped(world):
    register_panoptic(
        "test_demo_world_val",
        CATEGORIES,
        str(world / "val"),
        str(world / "panoptic_val"),
        str(world / "panoptic_val.json"),
        layout="",
    )
    from detectron2.data import DatasetCatalog

    out = RegionEvalMapper(image_size=128, patch_size=16, dataset_name="test_demo_world_val")(
        DatasetCatalog.get("test_demo_world_val")[0]
    )
    assert len(out["regions"]["classes"]) > 0 and out["regions"]["masks"].shape[1:] == (8, 8)


@pytest.mark.slow
@pytest.mark.skipif(
    bool(missing_requirements()), reason="open_clip_train's extras are not installed"
)
def test_reduced_demo_runs_and_caches(tmp_path, capsys):
    tool = runpy.run_module("demo.__main__")
    result = tool["main"](["--quick", "--demo-dir", str(tmp_path)])
    table = json.loads((tmp_path / "results.json").read_text())
    assert set(table) == set(MODELS)  # the two student families'
    assert {"map_student", "map_densevlm"} < set(table)
    for metrics in table.values():
        for kind in ("rois", "maskpool"):
            for key in ("thing.macc1", "thing.macc5", "stuff.macc1", "stuff.macc5", "fg_bias"):
                assert f"{kind}.{key}" in metrics
        # training-free segmentation of the val split's semantic view
        assert 0 <= metrics["sem_seg.mIoU"] <= 100 and 0 <= metrics["sem_seg.pACC"] <= 100
    labels = sorted((tmp_path / "datasets" / "demo_world" / "sem_seg_val").glob("*.png"))
    assert [p.stem for p in labels] == [f"val_{i:06d}" for i in range(16)]
    assert "| seg. mIoU | seg. pAcc |" in format_table(table)
    assert result["chart"].exists() and len(result["pictures"]) == 4
    assert all(Image.open(p).size[0] > 3 * 112 for p in result["pictures"])
    for name in MODELS:
        assert (tmp_path / "models" / f"{name}.pt").exists()
    capsys.readouterr()
    tool["main"](["--quick", "--demo-dir", str(tmp_path)])  # cached: re-evaluates and redraws only
    out = capsys.readouterr().out
    assert out.count("cached:") == 7 and "Train Epoch" not in out


def test_demo_names_missing_training_extras(monkeypatch, tmp_path):
    import demo.pipeline as pipeline

    monkeypatch.setitem(pipeline.TRAINING_MODULES, "no_such_module_xyz", "no-such-pkg")
    with pytest.raises(RuntimeError, match="needs .*no-such-pkg: pip install .*no-such-pkg"):
        pipeline.run_demo(tmp_path / "demo")
    assert not (tmp_path / "demo").exists()  # nothing started
