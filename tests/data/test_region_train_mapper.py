"""The training region sampler: grid shapes, cell coordinates, proposals and labelled boxes."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from densevlm_d2.data.mappers import RegionTrainMapper, grid_boxes, grid_choices


def test_grid_choices():
    dense = grid_choices(6, "densevlm")
    assert len(dense) == 17 and dense[:4] == [(2, 2), (2, 3), (2, 4), (3, 3)]
    assert dense[-3:] == [(6, 4), (6, 5), (6, 6)] and (3, 6) in dense and (4, 3) in dense
    clipself = grid_choices(6, "clipself")
    assert len(clipself) == 24 and clipself[:3] == [(1, 1), (1, 2), (2, 1)]
    assert max(m * n for m, n in clipself) == 36
    with pytest.raises(ValueError, match="grid style"):
        grid_choices(6, "other")


def test_grid_boxes_tile_the_image_row_by_row():
    boxes = grid_boxes(2, 3, 90.0, 60.0)  # float32 linspace, as published: 2/3 * 90 = 59.999996
    expected = torch.tensor(
        [
            [0, 0, 30, 30],
            [30, 0, 60, 30],
            [60, 0, 90, 30],
            [0, 30, 30, 60],
            [30, 30, 60, 60],
            [60, 30, 90, 60],
        ],
        dtype=torch.float32,
    )
    assert torch.allclose(boxes, expected, atol=1e-4)


@pytest.fixture
def image_file(tmp_path):
    path = tmp_path / "img.jpg"
    Image.fromarray(np.zeros((60, 120, 3), np.uint8)).save(path)  # 120 wide, 60 high
    return str(path)


def test_grid_mode_cells_on_the_canvas(image_file):
    random.seed(0)
    mapper = RegionTrainMapper(image_size=64, choices=[(2, 4)], max_boxes=36)
    out = mapper({"file_name": image_file, "image_id": 1})
    assert out["image"].shape == (3, 64, 64) and "crops" not in out
    boxes = out["boxes"]
    assert boxes.shape == (8, 4)
    # the cells tile the image (120 x 60 -> 64 x 32 on the canvas), not the padding
    expected = (grid_boxes(2, 4, 120, 60) * (64 / 120)).tolist()
    assert sorted(boxes.tolist()) == sorted(expected)
    assert boxes[:, 3].max() == pytest.approx(32.0)
    capped = RegionTrainMapper(
        image_size=64, choices=[(6, 6)], max_boxes=20, with_crops=True, crop_size=32
    )({"file_name": image_file})
    assert capped["boxes"].shape == (20, 4) and capped["crops"].shape == (20, 3, 32, 32)


def test_proposals_mode(image_file):
    random.seed(1)
    anns = [{"bbox": [0, 0, 4, 4]}] + [{"bbox": [10 * i, 5, 20, 30]} for i in range(25)]
    out = RegionTrainMapper(image_size=120, mode="proposals", max_boxes=20)(
        {"file_name": image_file, "annotations": anns}
    )
    # 20 of the 26 are considered; the 4 x 4 box would be dropped by the 8^2 size filter
    assert len(out["boxes"]) in (19, 20)
    assert all((b[2] - b[0]) * (b[3] - b[1]) >= 64 for b in out["boxes"].tolist())
    none_left = RegionTrainMapper(image_size=120, mode="proposals", with_crops=True, crop_size=16)(
        {"file_name": image_file, "annotations": [{"bbox": [0, 0, 2, 2]}]}
    )
    assert none_left["boxes"].tolist() == [[0.0, 0.0, 30.0, 15.0]]  # the top-left quarter
    assert none_left["crops"].shape == (1, 3, 16, 16)


def test_labeled_mode(image_file):
    anns = [
        {"bbox": [1, 2, 10, 20], "category_id": 7},
        {"bbox": [5, 5, 2, 2], "category_id": 3},
        {"bbox": [0, 0, 50, 50], "category_id": 1},
    ]
    out = RegionTrainMapper(image_size=60, mode="labeled", max_boxes=2)(
        {"file_name": image_file, "annotations": anns}
    )
    assert out["labels"].tolist() == [7, 3]  # json order, no size filter
    assert out["boxes"].tolist() == [[0.5, 1.0, 5.5, 11.0], [2.5, 2.5, 3.5, 3.5]]
    assert out["boxes"].dtype == torch.float32
    with pytest.raises(ValueError, match="region mode"):
        RegionTrainMapper(image_size=60, mode="boxes")
