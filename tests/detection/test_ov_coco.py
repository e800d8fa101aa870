"""OV-COCO: the class split, the json preparation, and AP50 base/novel/all against hand-computed
values."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from detectron2.structures import Boxes, Instances

from densevlm_d2.data.datasets.ov_coco import (
    OV_COCO_BASE,
    OV_COCO_CLASSES,
    OV_COCO_NOVEL,
    prepare_ov_coco_json,
    register_ov_coco_instances,
)
from densevlm_d2.evaluation import OVCOCOEvaluator, ap50_per_class

ROOT = Path(__file__).resolve().parents[2]


def coco_instances(path: Path, anns_per_class: int = 1) -> dict:
    """A COCO 2017 instances json with the 80 real categories (ids and names), a box per class."""
    cats = [
        {"id": c["id"], "name": c["name"], "supercategory": "x"}
        for c in COCO_CATEGORIES
        if c["isthing"]
    ]
    images = [{"id": 1, "file_name": "000000000001.jpg", "height": 100, "width": 100}]
    anns = [
        {"id": i + 1, "image_id": 1, "category_id": c["id"], "bbox": [1, 1, 10, 10], "area": 100,
         "iscrowd": 0}
        for i, c in enumerate(cats * anns_per_class)
    ]  # fmt: skip
    data = {"info": {}, "licenses": [], "images": images, "annotations": anns, "categories": cats}
    path.write_text(json.dumps(data))
    return data


def test_class_split():
    assert set(OV_COCO_BASE) | set(OV_COCO_NOVEL) == set(OV_COCO_CLASSES)
    coco_order = [c["name"] for c in COCO_CATEGORIES if c["isthing"]]
    assert list(OV_COCO_CLASSES) == [n for n in coco_order if n in OV_COCO_CLASSES]
    novel_idx = [OV_COCO_CLASSES.index(n) for n in OV_COCO_NOVEL]
    assert sorted(novel_idx) == [4, 5, 11, 12, 15, 16, 21, 23, 27, 29, 32, 34, 45, 47, 54, 58, 63]


def test_prepare_ov_coco_json(tmp_path):
    ann_dir = tmp_path / "coco" / "annotations"
    ann_dir.mkdir(parents=True)
    coco_instances(ann_dir / "instances_train2017.json")
    coco_instances(ann_dir / "instances_val2017.json")
    runpy.run_path(str(ROOT / "datasets" / "prepare_ov_coco.py"))["main"](["--root", str(tmp_path)])
    train = json.loads((ann_dir / "instances_train2017_ovcoco_base.json").read_text())
    val = json.loads((ann_dir / "instances_val2017_ovcoco.json").read_text())
    for data in (train, val):
        assert [c["name"] for c in data["categories"]] == list(OV_COCO_CLASSES)
    names = {c["id"]: c["name"] for c in train["categories"]}
    assert sorted(names[a["category_id"]] for a in train["annotations"]) == sorted(OV_COCO_BASE)
    assert len(val["annotations"]) == 65
    with pytest.raises(SystemExit, match="missing"):
        runpy.run_path(str(ROOT / "datasets" / "prepare_ov_coco.py"))["main"](
            ["--root", str(tmp_path / "nowhere")]
        )
    bad = tmp_path / "bad.json"
    data = coco_instances(bad)
    data["categories"] = [c for c in data["categories"] if c["name"] != "cake"]
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="cake"):
        prepare_ov_coco_json(str(bad), str(tmp_path / "out.json"))


def test_ap50_base_novel_all_hand_computed(tmp_path):
    # two categories: "dog" (novel) with two boxes, "car" (base) with one
    images = [{"id": 1, "file_name": "a.jpg", "height": 100, "width": 100}]
    anns = [
        {"id": i + 1, "image_id": 1, "category_id": c, "bbox": b, "area": 400, "iscrowd": 0}
        for i, (c, b) in enumerate(
            [(3, [0, 0, 20, 20]), (18, [50, 50, 20, 20]), (18, [10, 60, 20, 20])]
        )
    ]
    cats = [{"id": 3, "name": "car"}, {"id": 18, "name": "dog"}]
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    (tmp_path / "a.jpg").write_bytes(b"")
    name = "test_ov_coco_ap50"
    if name not in DatasetCatalog.list():
        register_ov_coco_instances(name, str(gt), str(tmp_path), ["dog"])
    DatasetCatalog.get(name)  # sets thing_classes and the id mapping
    assert MetadataCatalog.get(name).thing_classes == ["car", "dog"]
    evaluator = OVCOCOEvaluator(name, output_dir=str(tmp_path / "eval"))
    evaluator.reset()
    inst = Instances((100, 100))
    # the car found; one of the two dogs found (the other box misses)
    inst.pred_boxes = Boxes(torch.tensor([[0.0, 0, 20, 20], [50, 50, 70, 70], [80, 0, 99, 10]]))
    inst.scores = torch.tensor([0.9, 0.8, 0.7])
    inst.pred_classes = torch.tensor([0, 1, 1])
    evaluator.process([{"image_id": 1}], [{"instances": inst}])
    res = evaluator.evaluate()["bbox"]
    # car: AP50 100; dog: precision 1 up to recall 0.5 (51 of 101 recall points), then none
    assert res["AP50-car"] == pytest.approx(100.0)
    assert res["AP50-dog"] == pytest.approx(100 * 51 / 101)
    assert res["AP50-base"] == pytest.approx(100.0)
    assert res["AP50-novel"] == pytest.approx(100 * 51 / 101)
    assert res["AP50-all"] == pytest.approx((100 + 100 * 51 / 101) / 2)


def test_ap50_per_class_ignores_classes_without_ground_truth():
    import numpy as np

    precision = -np.ones((10, 101, 2, 4, 3))
    precision[0, :, 0, 0, -1] = 0.5
    ap = ap50_per_class(precision)
    assert ap[0] == pytest.approx(50.0) and np.isnan(ap[1])
