"""COCO panoptic -> semantic label PNGs, on a hand-made panoptic PNG and json."""

from __future__ import annotations

import json

import numpy as np
import pytest
from panopticapi.utils import id2rgb
from PIL import Image

from densevlm_d2.data.datasets import DatasetFormatError
from densevlm_d2.data.datasets.panoptic_semantic import panoptic_to_semantic, semantic_classes
from densevlm_d2.data.datasets.sem_seg import load_sem_seg_dicts

# category ids out of order and with gaps: labels follow the sorted ids (cat 3, sky 17, grass 40)
CATEGORIES = [
    {"id": 40, "name": "grass", "isthing": 0},
    {"id": 3, "name": "cat", "isthing": 1},
    {"id": 17, "name": "sky", "isthing": 0},
]


def _write(tmp_path, segments_info, ids):
    (tmp_path / "pan").mkdir(exist_ok=True)
    Image.fromarray(id2rgb(ids)).save(tmp_path / "pan" / "img_000.png")
    data = {
        "images": [{"id": 1, "file_name": "img_000.jpg", "height": 4, "width": 5}],
        "annotations": [
            {"image_id": 1, "file_name": "img_000.png", "segments_info": segments_info}
        ],
        "categories": CATEGORIES,
    }
    (tmp_path / "pan.json").write_text(json.dumps(data))
    return tmp_path / "pan.json", tmp_path / "pan"


def _ids():
    # segment ids: 7 sky (top row), 1000 grass (rows 1-3), 2 a cat, 9 a crowd of cats, 0 void
    ids = np.full((4, 5), 1000, np.int64)
    ids[0] = 7
    ids[1:3, 1:3] = 2
    ids[3, 4] = 9
    ids[3, 0] = 0
    return ids


SEGMENTS = [
    {"id": 7, "category_id": 17, "iscrowd": 0},
    {"id": 1000, "category_id": 40, "iscrowd": 0},
    {"id": 2, "category_id": 3, "iscrowd": 0},
    {"id": 9, "category_id": 3, "iscrowd": 1},
]


def test_labels_are_contiguous_indices_in_category_id_order(tmp_path):
    json_file, pan = _write(tmp_path, SEGMENTS, _ids())
    classes = panoptic_to_semantic(json_file, pan, tmp_path / "sem")
    assert classes == ["cat", "sky", "grass"] == semantic_classes(CATEGORIES)
    label = np.asarray(Image.open(tmp_path / "sem" / "img_000.png"))
    assert label.dtype == np.uint8
    expected = np.array(
        [
            [1, 1, 1, 1, 1],
            [2, 0, 0, 2, 2],
            [2, 0, 0, 2, 2],
            [255, 2, 2, 2, 0],  # void -> ignore; the crowd segment keeps its class
        ]
    )
    np.testing.assert_array_equal(label, expected)
    # pairs with its image by stem, as register_sem_seg reads it
    (tmp_path / "images").mkdir()
    Image.new("RGB", (5, 4)).save(tmp_path / "images" / "img_000.jpg")
    (d,) = load_sem_seg_dicts(str(tmp_path / "images"), str(tmp_path / "sem"))
    assert d["image_id"] == "img_000" and d["sem_seg_file_name"].endswith("img_000.png")


def test_crowd_as_ignore_and_unlisted_segments(tmp_path):
    # segment 2 is in the PNG but not in segments_info: ignored like void
    json_file, pan = _write(tmp_path, [s for s in SEGMENTS if s["id"] != 2], _ids())
    panoptic_to_semantic(json_file, pan, tmp_path / "sem", crowd_as_ignore=True, ignore_label=200)
    label = np.asarray(Image.open(tmp_path / "sem" / "img_000.png"))
    assert label[3, 4] == 200 and label[3, 0] == 200 and (label[1:3, 1:3] == 200).all()


def test_errors_name_the_problem(tmp_path):
    json_file, pan = _write(tmp_path, [{"id": 7, "category_id": 5, "iscrowd": 0}], _ids())
    with pytest.raises(DatasetFormatError, match="segment 7: category 5"):
        panoptic_to_semantic(json_file, pan, tmp_path / "sem")
    with pytest.raises(ValueError, match="ignore_label 1 is a class index"):
        panoptic_to_semantic(json_file, pan, tmp_path / "sem", ignore_label=1)
