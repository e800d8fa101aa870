"""A preparation script stopped by a bad raw file leaves no partial split that would load; a split
that is missing labels is an error naming them, not a smaller benchmark."""

from __future__ import annotations

import numpy as np
import pytest
from detectron2.data import DatasetCatalog
from PIL import Image

from densevlm_d2.data.datasets import DatasetLayoutError
from densevlm_d2.data.datasets import prepare_sem_seg as prep
from densevlm_d2.data.datasets.sem_seg import register_sem_seg_benchmarks
from densevlm_d2.utils.files import temporary_files

IDS = ["2007_000001", "2007_000002", "2007_000003", "2007_000004"]


def _voc(root, bad: str | None = None):
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    (voc / "ImageSets/Segmentation/val.txt").write_text("\n".join(IDS) + "\n")
    for i, stem in enumerate(IDS):
        Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(voc / "JPEGImages" / f"{stem}.jpg")
        label = np.full((6, 8), i % 21, np.uint8)
        path = voc / "SegmentationClass" / f"{stem}.png"
        if stem == bad:
            Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(path)  # RGB: not a label PNG
        else:
            Image.fromarray(label, mode="L").save(path)
    return voc


def test_a_bad_raw_file_leaves_no_output(tmp_path):
    voc = _voc(tmp_path, bad=IDS[2])
    with pytest.raises(ValueError, match=f"{IDS[2]}.png: expected a grey or palette label PNG"):
        prep.prepare_voc(voc, progress=False)
    for folder in ("annotations_detectron2", "annotations_detectron2_voc21",
                   "annotations_detectron2_bg"):  # fmt: skip
        out = voc / folder
        assert not (out / "val").exists(), folder
        assert temporary_files(out) == [], folder  # the partial folder was removed


def test_a_failed_run_keeps_the_previous_complete_output(tmp_path):
    voc = _voc(tmp_path)
    out20, _, _ = prep.prepare_voc(voc, progress=False)
    before = sorted(p.name for p in out20.iterdir())
    assert len(before) == 4
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(voc / "SegmentationClass" / f"{IDS[1]}.png")
    with pytest.raises(ValueError, match="expected a grey or palette label PNG"):
        prep.prepare_voc(voc, progress=False)
    assert sorted(p.name for p in out20.iterdir()) == before
    assert temporary_files(out20.parent) == []


def test_a_split_missing_labels_does_not_load(tmp_path):
    voc = _voc(tmp_path)
    out20, _, _ = prep.prepare_voc(voc, progress=False)
    for stem in IDS[2:]:  # as if two labels had been lost
        (out20 / f"{stem}.png").unlink()
    names = register_sem_seg_benchmarks(str(tmp_path), prefix="test_atomic_")
    name = next(n for n in names if n.startswith("test_atomic_voc_20_"))
    with pytest.raises(DatasetLayoutError, match=rf"2 label files not found in .*{IDS[2]}.png"):
        DatasetCatalog.get(name)
    voc21 = next(n for n in names if n.startswith("test_atomic_voc_21_"))
    assert len(DatasetCatalog.get(voc21)) == 4  # the complete split of the same images


def test_an_interrupted_panoptic_writer_leaves_no_dataset(tmp_path):
    from densevlm_d2.data.datasets.panoptic_writer import PanopticWriter

    cats = [{"id": 1, "name": "cat", "isthing": 1}, {"id": 2, "name": "sky", "isthing": 0}]
    ids = np.ones((4, 6), np.int64)
    ids[:2] = 2
    image = np.zeros((4, 6, 3), np.uint8)
    json_file, pan, img = tmp_path / "pan.json", tmp_path / "pan", tmp_path / "img"
    with (
        pytest.raises(RuntimeError, match="a bad scene"),
        PanopticWriter(json_file, pan, cats, img) as w,
    ):
        w.add(1, "a", ids, [(1, 1, 0), (2, 2, 0)], image)
        raise RuntimeError("a bad scene")
    assert not json_file.exists() and not pan.exists() and not img.exists()
    assert temporary_files(tmp_path) == []
    with PanopticWriter(json_file, pan, cats, img) as w:
        ann = w.add(1, "a", ids, [(1, 1, 0), (2, 2, 0)], image)
    assert [s["area"] for s in ann["segments_info"]] == [12, 12]
    assert ann["segments_info"][1]["bbox"] == [0, 0, 6, 2]
    assert sorted(p.name for p in pan.iterdir()) == ["a.png"] and json_file.exists()
