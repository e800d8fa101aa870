"""Semantic-segmentation metrics on hand-made label maps: mIoU, fwIoU, pixel accuracy and the
per-class IoU, with ignored pixels, a class predicted but absent and a class absent everywhere."""

from __future__ import annotations

import json
import math

from densevlm_d2.evaluation import SemSegMetricsEvaluator

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image


@pytest.fixture
def dataset(tmp_path):
    # image 0 (2 x 4): gt  [[0, 0, 1, 1], [0, 255, 1, 1]]
    # image 1 (1 x 4): gt  [[2, 2, 0, 0]]
    gts = [np.array([[0, 0, 1, 1], [0, 255, 1, 1]]), np.array([[2, 2, 0, 0]])]
    records = []
    for i, gt in enumerate(gts):
        Image.fromarray(gt.astype(np.uint8)).save(tmp_path / f"{i}.png")
        records.append({"file_name": f"img{i}.jpg", "sem_seg_file_name": str(tmp_path / f"{i}.png"),
                        "height": gt.shape[0], "width": gt.shape[1]})  # fmt: skip
    name = f"hand_sem_seg_{tmp_path.name}"
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(
        stuff_classes=["background, sky", "cat", "dog", "bird"],
        display_classes=["background", "cat", "dog", "bird"],
        ignore_label=255,
        evaluator_type="sem_seg",
    )
    return name


def one_hot(pred: np.ndarray, num_classes: int = 4) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.as_tensor(pred), num_classes).permute(2, 0, 1).float()


def test_hand_computed_metrics(dataset, tmp_path):
    # predictions:      [[0, 1, 1, 1], [3, 2, 1, 0]]   (the ignored pixel predicts 2: not counted)
    #                   [[2, 0, 0, 3]]
    preds = [np.array([[0, 1, 1, 1], [3, 2, 1, 0]]), np.array([[2, 0, 0, 3]])]
    ev = SemSegMetricsEvaluator(dataset, str(tmp_path / "out"), distributed=False)
    ev.reset()
    for i, p in enumerate(preds):
        ev.process([{"file_name": f"img{i}.jpg"}], [{"sem_seg": one_hot(p)}])
    res = ev.evaluate()["sem_seg"]
    # the 11 scored pixels (gt -> pred): image 0: 0->0, 0->1, 1->1, 1->1, 0->3, 1->1, 1->0;
    # image 1: 2->2, 2->0, 0->0, 0->3. Per class (gt, pred, tp -> IoU): background (5, 4, 2 -> 2/7),
    # cat (4, 4, 3 -> 3/5), dog (2, 1, 1 -> 1/2), bird (0, 2, 0 -> 0, counted in the mean)
    iou = {"background": 2 / 7, "cat": 3 / 5, "dog": 1 / 2, "bird": 0.0}
    assert res["IoU-background"] == pytest.approx(100 * iou["background"])
    assert res["IoU-cat"] == pytest.approx(100 * iou["cat"])
    assert res["IoU-dog"] == pytest.approx(100 * iou["dog"])
    assert math.isnan(res["IoU-bird"])  # detectron2 leaves it nan but counts it in the mean
    assert res["mIoU"] == pytest.approx(100 * sum(iou.values()) / 4)
    assert res["pACC"] == pytest.approx(100 * 6 / 11)
    assert res["fwIoU"] == pytest.approx(
        100 * (5 * iou["background"] + 4 * iou["cat"] + 2 * iou["dog"]) / 11
    )
    assert res["mACC"] == pytest.approx(100 * (2 / 5 + 3 / 4 + 1 / 2) / 3)
    written = json.loads((tmp_path / "out" / "sem_seg_metrics.json").read_text())
    assert written["num_images"] == 2 and written["mIoU"] == pytest.approx(res["mIoU"])
    assert not (tmp_path / "out" / "sem_seg_predictions.json").exists()


def test_a_class_absent_everywhere_does_not_count(dataset, tmp_path):
    # perfect predictions: classes 0, 1, 2 have IoU 1, bird (never in gt nor predicted) is left out
    gts = [np.array([[0, 0, 1, 1], [0, 0, 1, 1]]), np.array([[2, 2, 0, 0]])]
    ev = SemSegMetricsEvaluator(
        dataset, str(tmp_path / "out"), distributed=False, save_predictions=True
    )
    ev.reset()
    for i, g in enumerate(gts):
        ev.process([{"file_name": f"img{i}.jpg"}], [{"sem_seg": one_hot(g)}])
    res = ev.evaluate()["sem_seg"]
    assert res["mIoU"] == pytest.approx(100.0) and res["pACC"] == pytest.approx(100.0)
    # with save_predictions, detectron2's RLE predictions are written too
    assert json.loads((tmp_path / "out" / "sem_seg_predictions.json").read_text())
