"""Every reader of a semantic-segmentation label file checks it: values, size, channels; the error
names the file and the dataset (evaluation and training, not only tools/check_dataset.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from PIL import Image

import densevlm_d2
from densevlm_d2.data.datasets import DatasetFormatError, register_sem_seg
from densevlm_d2.data.mappers import SemSegTrainMapper
from densevlm_d2.evaluation import SemSegMetricsEvaluator

CLASSES = ["sky", "grass", "cat"]


def _dataset(tmp_path, name, label):
    images, labels = tmp_path / name / "img", tmp_path / name / "lab"
    images.mkdir(parents=True)
    labels.mkdir()
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(images / "a.jpg")
    Image.fromarray(label).save(labels / "a.png")
    register_sem_seg(name, str(images), str(labels), CLASSES)
    return DatasetCatalog.get(name)


def _evaluate(name, record):
    ev = SemSegMetricsEvaluator(name, distributed=False)
    ev.reset()
    scores = torch.zeros(3, 6, 8)
    ev.process([record], [{"sem_seg": scores}])
    return ev


def test_good_labels_are_scored(tmp_path):
    label = np.full((6, 8), 255, np.uint8)
    label[:3] = 0
    (record,) = _dataset(tmp_path, "test_labels_good", label)
    ev = _evaluate("test_labels_good", record)
    assert ev._conf_matrix.sum() == 48 and ev._conf_matrix[0, 0] == 24


@pytest.mark.parametrize(
    "name, label, match",
    [
        (
            "test_labels_values",
            np.full((6, 8), 7, np.uint8),
            r"a.png \(dataset test_labels_values, image .*a.jpg\): label values \[7\] are "
            r"neither a class index \(0..2\) nor the ignore label 255",
        ),
        (
            "test_labels_size",
            np.zeros((5, 8), np.uint8),
            r"a.png \(dataset test_labels_size, .*\): the labels are 8x5 \(WxH\) but the image is "
            r"8x6",
        ),
        (
            "test_labels_rgb",
            np.zeros((6, 8, 3), np.uint8),
            r"a.png \(dataset test_labels_rgb, .*\): a label file holds one class index per pixel "
            r"\(H, W\); it decodes to shape \(6, 8, 3\)",
        ),
    ],
)
def test_bad_labels_are_errors_naming_the_file(tmp_path, name, label, match):
    (record,) = _dataset(tmp_path, name, label)
    with pytest.raises(DatasetFormatError, match=match):
        _evaluate(name, record)


def test_training_on_labels_beyond_the_vocabulary_names_file_and_dataset(tmp_path):
    (record,) = _dataset(tmp_path, "test_labels_train", np.full((6, 8), 3, np.uint8))
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.DATASETS.TRAIN = ("test_labels_train",)
    cfg.INPUT.MIN_SIZE_TRAIN = (6,)
    cfg.INPUT.CROP.ENABLED = False
    mapper = SemSegTrainMapper(cfg, True)
    assert mapper.num_classes == 3
    with pytest.raises(
        DatasetFormatError,
        match=r"a.png \(dataset test_labels_train, image .*a.jpg\): label values \[3\]",
    ):
        mapper(record)
