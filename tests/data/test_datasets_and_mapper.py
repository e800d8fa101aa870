"""Registered datasets, the panoptic loader and the region-evaluation mapper on hand-drawn data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog

from densevlm_d2.data import dataset_vocabulary
from densevlm_d2.data.datasets import DatasetLayoutError, register_panoptic
from densevlm_d2.data.datasets.builtin import ADE20K_LAYOUT
from densevlm_d2.data.mappers import RegionEvalMapper
from tests.synthetic import CATEGORIES, write_toy


def test_builtin_registrations():
    coco = MetadataCatalog.get("densevlm_coco_panoptic_val")
    vocabulary = dataset_vocabulary("densevlm_coco_panoptic_val")
    assert len(vocabulary) == 133 and sum(vocabulary.is_thing) == 80
    # sorted category ids
    assert vocabulary.names[0] == "person" and vocabulary.names[80] == "banner"
    assert coco.panoptic_json.endswith("coco/annotations/panoptic_val2017.json")
    assert coco.panoptic_root.endswith("coco/annotations/panoptic_val2017")
    assert coco.image_root.endswith("coco/val2017")
    assert "densevlm_coco_panoptic_train" in DatasetCatalog.list()
    ade = MetadataCatalog.get("densevlm_ade20k_panoptic_val")
    vocabulary = dataset_vocabulary("densevlm_ade20k_panoptic_val")
    assert len(vocabulary) == 150 and sum(vocabulary.is_thing) == 100
    # bed: a thing
    assert vocabulary.names[:3] == ("wall", "building", "sky") and vocabulary.is_thing[7]
    assert ade.image_root.endswith("ADEChallengeData2016/images/validation")


def test_missing_files_name_the_path_and_layout(tmp_path):
    name = "test_missing_ade"
    register_panoptic(
        name,
        CATEGORIES,
        str(tmp_path / "images"),
        str(tmp_path / "pan"),
        str(tmp_path / "ade20k_panoptic_val.json"),
        layout=ADE20K_LAYOUT,
    )
    with pytest.raises(DatasetLayoutError) as e:
        DatasetCatalog.get(name)
    msg = str(e.value)
    assert str(tmp_path / "ade20k_panoptic_val.json") in msg and "ade20k_panoptic_val/" in msg
    assert "datasets/README.md" in msg


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The toy dataset in COCO layout (integer ids) and in ADE layout (string ids)."""
    root = tmp_path_factory.mktemp("toy")
    write_toy(
        str(root / "coco/val2017"),
        str(root / "coco/annotations/panoptic_val2017"),
        str(root / "coco/annotations/panoptic_val2017.json"),
    )
    register_panoptic(
        "test_toy_coco",
        CATEGORIES,
        str(root / "coco/val2017"),
        str(root / "coco/annotations/panoptic_val2017"),
        str(root / "coco/annotations/panoptic_val2017.json"),
        layout="",
    )
    ade = root / "ADEChallengeData2016"
    write_toy(
        str(ade / "images/validation"),
        str(ade / "ade20k_panoptic_val"),
        str(ade / "ade20k_panoptic_val.json"),
        image_ids=("ADE_val_00000001", "ADE_val_00000002"),
    )
    register_panoptic(
        "test_toy_ade",
        CATEGORIES,
        str(ade / "images/validation"),
        str(ade / "ade20k_panoptic_val"),
        str(ade / "ade20k_panoptic_val.json"),
        layout="",
    )
    return root


def test_loader(toy):
    dicts = DatasetCatalog.get("test_toy_coco")
    assert [d["image_id"] for d in dicts] == [1, 2]
    assert (dicts[0]["height"], dicts[0]["width"]) == (64, 96)
    seg = dicts[0]["segments_info"]
    assert [s["category_id"] for s in seg] == [3, 4, 0, 1, 1, 0, 1]  # contiguous ids
    assert [s["isthing"] for s in seg] == [False, False, True, True, True, True, True]
    ade = DatasetCatalog.get("test_toy_ade")
    assert [d["image_id"] for d in ade] == ["ADE_val_00000001", "ADE_val_00000002"]
    assert ade[1]["pan_seg_file_name"].endswith("ade20k_panoptic_val/ADE_val_00000002.png")


def test_vocabulary_mismatch_is_an_error(toy, tmp_path):
    data = json.loads((toy / "coco/annotations/panoptic_val2017.json").read_text())
    data["categories"] = data["categories"][:-1]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    register_panoptic(
        "test_toy_bad",
        CATEGORIES,
        str(toy / "coco/val2017"),
        str(toy / "coco/annotations/panoptic_val2017"),
        str(bad),
        layout="",
    )
    with pytest.raises(ValueError, match="do not match the registered vocabulary of 6 classes"):
        DatasetCatalog.get("test_toy_bad")


def _mapper(**kw):
    args = dict(
        image_size=96,
        patch_size=16,
        region_types=("rois", "maskpool", "crops"),
        dataset_name="test_toy_coco",
    )
    args.update(kw)
    return RegionEvalMapper(**args)


def test_mapper_regions(toy):
    d1, d2 = DatasetCatalog.get("test_toy_coco")
    out = _mapper()(d1)
    assert out["image"].shape == (3, 96, 96) and out["image"].dtype == torch.uint8
    assert out["image"][:, 64:].sum() == 0  # zero padding below the image
    assert out["scale"] == 1.0 and out["dataset_name"] == "test_toy_coco"
    r = out["regions"]
    # the 4 x 4 px cat is filtered by size; the crowd dog is kept
    assert r["segment_ids"].tolist() == [101, 102, 103, 104, 105, 107]
    assert r["classes"].tolist() == [3, 4, 0, 1, 1, 1]
    assert r["is_thing"].tolist() == [False, False, True, True, True, True]
    assert r["boxes"].tolist() == [
        [0, 0, 95, 31],  # sky: tight mask box, far edge = index of the last pixel (published)
        [0, 32, 95, 63],  # grass
        [32, 0, 64, 32],  # cat: annotation bbox x, y, x + w, y + h
        [48, 32, 80, 48],
        [80, 0, 96, 16],
        [0, 48, 16, 88],  # reaches into the padding, as annotated
    ]
    sky = np.zeros((6, 6), bool)
    sky[0, [0, 1, 4]] = sky[1, [0, 1, 4, 5]] = True
    assert r["masks"].shape == (6, 6, 6) and torch.equal(r["masks"][0], torch.from_numpy(sky))
    f_mask = np.zeros((6, 6), bool)
    f_mask[3, 0] = True
    assert torch.equal(r["masks"][5], torch.from_numpy(f_mask))
    assert r["crops"].shape == (6, 3, 224, 224)

    portrait = _mapper()(d2)
    assert portrait["image"][:, :, 64:].sum() == 0  # padding on the right
    assert portrait["regions"]["boxes"][2].tolist() == [16, 16, 48, 48]


def test_mapper_scaling_cap_and_types(toy):
    d1 = DatasetCatalog.get("test_toy_coco")[0]
    out = _mapper(image_size=48, patch_size=16, region_types=("rois",), max_regions=6)(d1)
    r = out["regions"]
    assert out["scale"] == 0.5 and out["image"].shape == (3, 48, 48)
    # the first 6 segments are considered, the filtered tiny cat among them: F is not
    assert r["segment_ids"].tolist() == [101, 102, 103, 104, 105]
    assert r["boxes"][2].tolist() == [16, 0, 32, 16]  # scaled to the canvas
    assert "masks" not in r and "crops" not in r
    with pytest.raises(ValueError, match="region types must be among"):
        _mapper(region_types=("boxes",))


def test_mapper_filters_by_size(toy):
    d1 = DatasetCatalog.get("test_toy_coco")[0]
    r = _mapper(min_size=20, max_size=50)(d1)["regions"]  # areas in original pixels
    # kept: cat 32x32, E 32x16, F 16x40; dropped: sky/grass 95x31 (> 50^2), D 16x16 (< 20^2)
    assert r["segment_ids"].tolist() == [103, 104, 107]
