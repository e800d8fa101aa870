"""The region mean-accuracy evaluator against hand-computed numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from densevlm_d2.data.datasets import register_panoptic
from densevlm_d2.evaluation import RegionAccuracyEvaluator, region_accuracy
from tests.synthetic import CATEGORIES

# the toy vocabulary, contiguous order = sorted ids: cat 0, dog 1, car 2, sky 3, grass 4, tree 5


@pytest.fixture(scope="module")
def dataset_name(tmp_path_factory):
    root = tmp_path_factory.mktemp("unused")
    name = "test_region_accuracy_vocab"
    register_panoptic(name, CATEGORIES, str(root), str(root), str(root / "x.json"), layout="")
    return name


def _scores(rankings, num_classes=6):
    """Scores whose descending order is each given ranking (then the remaining classes)."""
    out = torch.zeros(len(rankings), num_classes)
    for i, ranking in enumerate(rankings):
        for r, c in enumerate(ranking):
            out[i, c] = 10.0 - r
    return out


def _image(image_id, classes, rankings):
    inp = {
        "image_id": image_id,
        "regions": {
            "classes": torch.tensor(classes),
            "segment_ids": torch.arange(1, len(classes) + 1),
        },
    }
    out = {"region_scores": {"rois": _scores(rankings), "maskpool": _scores(rankings)}}
    return inp, out


def test_hand_computed_metrics(dataset_name, tmp_path):
    ev = RegionAccuracyEvaluator(dataset_name, output_dir=str(tmp_path), distributed=False)
    ev.reset()
    # image 1: cat right; cat wrong (dog first, cat 2nd); sky right; grass predicted cat (fg-bias)
    # image 2: dog wrong, dog at rank 6 (outside the top 5); grass right; sky predicted tree
    # car and tree never occur: they are left out of the means
    i1 = _image(1, [0, 0, 3, 4], [[0], [1, 0], [3], [0, 4]])
    i2 = _image("ADE_val_2", [1, 4, 3], [[0, 2, 3, 4, 5, 1], [4], [5, 3]])
    ev.process([i1[0], i2[0]], [i1[1], i2[1]])
    ev.process([i1[0]], [i1[1]])  # a duplicate record (same image, same segments) is dropped
    res = ev.evaluate()["rois"]
    # per class top-1: cat 1/2, dog 0/1, sky 1/2, grass 1/2
    # per class top-5: cat 2/2, dog 0/1, sky 2/2, grass 2/2
    assert res["thing.macc1"] == pytest.approx(100 * (0.5 + 0.0) / 2)
    assert res["thing.macc5"] == pytest.approx(100 * (1.0 + 0.0) / 2)
    assert res["stuff.macc1"] == pytest.approx(100 * (0.5 + 0.5) / 2)
    assert res["stuff.macc5"] == pytest.approx(100.0)
    assert res["all.macc1"] == pytest.approx(100 * (0.5 + 0 + 0.5 + 0.5) / 4)
    assert res["all.macc5"] == pytest.approx(100 * (1 + 0 + 1 + 1) / 4)
    assert res["fg_bias"] == pytest.approx(100 * 1 / 4)  # of 4 stuff regions, 1 predicted a thing
    saved = json.loads((tmp_path / "region_macc.json").read_text())
    assert saved["num_images"] == 2 and saved["num_regions"] == {"thing": 3, "stuff": 4}
    assert saved["metrics"]["maskpool.thing.macc1"] == pytest.approx(25.0)
    assert [(r["class"], r["regions"]) for r in saved["per_class"]] == [
        ("cat", 2),
        ("dog", 1),
        ("sky", 2),
        ("grass", 2),
    ]


def test_no_stuff_regions_gives_nan_not_an_error():
    metrics, rows = region_accuracy(
        np.array([0, 1]),
        np.array([True, False]),
        np.array([True, True]),
        np.array([True, True]),
        np.array([True, True, False]),
    )
    assert metrics["thing.macc1"] == 50.0 and np.isnan(metrics["stuff.macc1"])
    assert np.isnan(metrics["fg_bias"]) and len(rows) == 2


def test_float64_exactness():
    """Per-class means are exact in float64 (1/3 + 2/3 would drift in float16, as published)."""
    gt = np.array([0, 0, 0, 1, 1, 1])
    c1 = np.array([1, 0, 0, 1, 1, 0], bool)
    metrics, _ = region_accuracy(gt, c1, c1, np.zeros(6, bool), np.array([True, True]))
    assert metrics["thing.macc1"] == 100 * (1 / 3 + 2 / 3) / 2


def test_skipped_empty_segments_are_counted_and_reported(dataset_name, tmp_path, caplog):
    """Stuff segments without pixels (skipped by the mapper) are never scored; their number is in
    the log and in region_macc.json, including those of images left with no region."""
    ev = RegionAccuracyEvaluator(dataset_name, output_dir=str(tmp_path), distributed=False)
    ev.reset()
    one, out_one = _image(1, [0, 3], [[0], [3]])
    one["regions"]["empty_segments_skipped"] = 2
    none, out_none = _image(2, [], [])
    none["regions"]["empty_segments_skipped"] = 1
    ev.process([one, none], [out_one, out_none])
    with caplog.at_level("WARNING"):
        res = ev.evaluate()
    assert res["rois"]["all.macc1"] == pytest.approx(100.0)
    saved = json.loads((tmp_path / "region_macc.json").read_text())
    assert saved["empty_segments_skipped"] == 3
    assert saved["num_regions"] == {"thing": 1, "stuff": 1}
    assert "3 stuff segment(s) in 2 image(s) have no pixels" in caplog.text
