"""Semantic-segmentation metrics on hand-made label maps: mIoU, fwIoU, pixel accuracy and the
per-class IoU, with ignored pixels, a class predicted but absent and a class absent everywhere;
VOC-20b's surplus query classes counted as background; outputs with the wrong number of channels."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from densevlm_d2.clip.vocabulary import Vocabulary
from densevlm_d2.data import shipped_vocabulary
from densevlm_d2.evaluation import SemSegMetricsEvaluator


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
    vocabulary = Vocabulary.from_names(["background, sky", "cat", "dog", "bird"], source=name)
    assert vocabulary.display_names == ("background", "cat", "dog", "bird")
    MetadataCatalog.get(name).set(
        vocabulary=vocabulary,
        stuff_classes=list(vocabulary.names),
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


def test_an_output_with_another_number_of_channels_is_an_error(dataset, tmp_path):
    # detectron2 alone would count a 5th channel's pixels as ignored and never see a missing one
    ev = SemSegMetricsEvaluator(dataset, str(tmp_path / "out"), distributed=False)
    ev.reset()
    pred = np.zeros((2, 4), np.int64)
    for channels in (5, 3):
        with pytest.raises(
            ValueError, match=rf"{dataset}'? scores 4 classes.* {channels} channels"
        ):
            ev.process([{"file_name": "img0.jpg"}], [{"sem_seg": one_hot(pred, channels)}])


@pytest.fixture
def voc_20b_like(tmp_path):
    """VOC-20b's metadata (21 scored classes, 59 queries, predictions >= 20 -> 20) on two images."""
    vocabulary = shipped_vocabulary("voc_20b")
    assert len(vocabulary.query_names) == 59 and vocabulary.background_index == 20
    assert vocabulary.surplus_index == 20
    # image 0 (2 x 4): gt [[20, 20, 0, 0], [20, 255, 14, 14]]   (20 background, 14 person)
    # image 1 (1 x 2): gt [[0, 20]]
    gts = [np.array([[20, 20, 0, 0], [20, 255, 14, 14]]), np.array([[0, 20]])]
    records = []
    for i, gt in enumerate(gts):
        Image.fromarray(gt.astype(np.uint8)).save(tmp_path / f"{i}.png")
        records.append(
            {"file_name": f"img{i}.jpg", "sem_seg_file_name": str(tmp_path / f"{i}.png")}
        )
    name = f"voc_20b_like_{tmp_path.name}"
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(
        vocabulary=vocabulary.replace(source=name),
        stuff_classes=list(vocabulary.names),
        ignore_label=255,
        evaluator_type="sem_seg",
    )
    return name


def test_surplus_query_classes_count_as_background(voc_20b_like, tmp_path):
    ev = SemSegMetricsEvaluator(voc_20b_like, str(tmp_path / "out"), distributed=False)
    ev.reset()
    # image 0, one-hot over the 59 queries: [[35, 20, 0, 21], [58, 3, 3, 14]]: query 35 ("grass"),
    # 20 ("bag"), 21 and 58 are Context classes, so background; the ignored pixel predicts 3
    ev.process([{"file_name": "img0.jpg"}],
               [{"sem_seg": one_hot(np.array([[35, 20, 0, 21], [58, 3, 3, 14]]), 59)}])  # fmt: skip
    # image 1: the argmax is over all 59 channels before the mapping, so 38 Context queries at 0.3
    # do not outvote aeroplane at 0.4 (pixel 0), and query 40 at 0.5 beats it (pixel 1)
    scores = torch.zeros(59, 1, 2)
    scores[0] = 0.4
    scores[21:, 0, 0] = 0.3
    scores[40, 0, 1] = 0.5
    ev.process([{"file_name": "img1.jpg"}], [{"sem_seg": scores}])
    res = ev.evaluate()["sem_seg"]
    # scored pixels (gt -> prediction after the mapping): image 0: 20->20, 20->20, 0->0, 0->20,
    # 20->20, 14->3, 14->14; image 1: 0->0, 20->20. Per class (gt, predicted, tp -> IoU):
    # background (4, 5, 4 -> 4/5), aeroplane (3, 2, 2 -> 2/3), person (2, 1, 1 -> 1/2), ship
    # (0, 1, 0 -> 0, counted in the mean)
    assert res["IoU-background"] == pytest.approx(100 * 4 / 5)
    assert res["IoU-aeroplane"] == pytest.approx(100 * 2 / 3)
    assert res["IoU-person"] == pytest.approx(100 * 1 / 2)
    assert res["mIoU"] == pytest.approx(100 * (4 / 5 + 2 / 3 + 1 / 2 + 0) / 4)
    assert res["pACC"] == pytest.approx(100 * 7 / 9)
    assert len([k for k in res if k.startswith("IoU-")]) == 21  # the scored classes only


def test_surplus_queries_need_one_channel_per_query(voc_20b_like, tmp_path):
    ev = SemSegMetricsEvaluator(voc_20b_like, str(tmp_path / "out"), distributed=False)
    ev.reset()
    with pytest.raises(ValueError, match=r"one output channel per query class \(59.* 21 channels"):
        ev.process([{"file_name": "img1.jpg"}], [{"sem_seg": one_hot(np.array([[0, 20]]), 21)}])
