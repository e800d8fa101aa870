"""datasets/prepare_ade20k_panoptic.py on a small ADEChallengeData2016 tree in the real format."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
from detectron2.data import DatasetCatalog
from panopticapi.utils import rgb2id
from PIL import Image

from densevlm_d2.data.datasets import register_panoptic
from densevlm_d2.data.datasets.ade20k_categories import ADE20K_150
from densevlm_d2.data.mappers import RegionEvalMapper

SCRIPT = Path(__file__).resolve().parents[2] / "datasets" / "prepare_ade20k_panoptic.py"


def _write_release(root: Path):
    """One 32 x 48 validation image: wall (1) and sky (3) stuff, a bed (semantic 8, instance
    class 1, instance 1), a window (semantic 9, instance class 2, instance 2) whose instance mask
    also covers pixels the semantic map calls wall, and 4 void pixels."""
    ade = root / "ADEChallengeData2016"
    for sub in ("images/validation", "annotations/validation", "annotations_instance/validation"):
        (ade / sub).mkdir(parents=True)
    sem = np.full((32, 48), 1, np.uint8)
    sem[:16] = 3
    sem[4:12, 4:20] = 8
    sem[20:28, 30:46] = 9
    sem[30:, :4] = 0
    ins = np.zeros((32, 48, 3), np.uint8)
    ins[4:12, 4:20] = (1, 1, 0)
    ins[20:28, 28:46] = (2, 2, 0)  # 2 columns wider than the semantic window
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 48, 3), np.uint8)).save(
        ade / "images/validation/ADE_val_00000001.jpg"
    )
    Image.fromarray(sem).save(ade / "annotations/validation/ADE_val_00000001.png")
    Image.fromarray(ins).save(ade / "annotations_instance/validation/ADE_val_00000001.png")
    return ade, sem


def test_prepare_and_load(tmp_path):
    ade, sem = _write_release(tmp_path)
    runpy.run_path(str(SCRIPT))["main"](["--root", str(tmp_path)])
    data = json.loads((ade / "ade20k_panoptic_val.json").read_text())
    assert data["categories"] == ADE20K_150
    assert data["images"] == [
        {"id": "ADE_val_00000001", "file_name": "ADE_val_00000001.jpg", "width": 48, "height": 32}
    ]
    segs = data["annotations"][0]["segments_info"]
    # stuff first in class order (wall 0, sky 2), then things in instance order (bed 7, window 8)
    assert [(s["id"], s["category_id"]) for s in segs] == [
        (1000, 0),
        (3000, 2),
        (8001, 7),
        (9002, 8),
    ]
    ids = rgb2id(np.asarray(Image.open(ade / "ade20k_panoptic_val/ADE_val_00000001.png")))
    assert (ids[30:, :4] == 0).all()  # void stays void
    assert (ids[20:28, 28:30] == 9002).all()  # the window instance is painted over wall
    assert (ids[4:12, 4:20] == 8001).all()
    wall = next(s for s in segs if s["id"] == 1000)
    assert wall["area"] == int((ids == 1000).sum()) and wall["bbox"] == [0, 16, 48, 16]
    assert next(s for s in segs if s["id"] == 9002)["bbox"] == [28, 20, 18, 8]

    register_panoptic(
        "test_prepared_ade",
        ADE20K_150,
        str(ade / "images/validation"),
        str(ade / "ade20k_panoptic_val"),
        str(ade / "ade20k_panoptic_val.json"),
        layout="",
    )
    (d,) = DatasetCatalog.get("test_prepared_ade")
    out = RegionEvalMapper(image_size=64, patch_size=16, dataset_name="test_prepared_ade")(d)
    assert out["regions"]["classes"].tolist() == [0, 2, 7, 8]
    assert out["regions"]["is_thing"].tolist() == [False, False, True, True]
