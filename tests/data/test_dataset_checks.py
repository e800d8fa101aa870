"""Datasets are checked, not trusted: inconsistent jsons and PNGs give errors that name the file,
the image and the segment; stuff segments that Mask2Former's ADE20K preparation leaves without
pixels are skipped and counted; tools/check_dataset.py lists every problem."""

from __future__ import annotations

import itertools
import json
import re
import runpy
from pathlib import Path

import numpy as np
import pytest
from detectron2.data import DatasetCatalog
from panopticapi.utils import id2rgb, rgb2id
from PIL import Image

from densevlm_d2.data.check import check_dataset
from densevlm_d2.data.datasets import DatasetFormatError, register_panoptic
from densevlm_d2.data.mappers import RegionEvalMapper
from tests.synthetic import CATEGORIES, write_toy

ROOT = Path(__file__).resolve().parents[2]
_names = itertools.count()


def _toy(tmp_path, edit_json=None, edit_files=None):
    """The hand-drawn toy dataset (2 images), edited, registered under a fresh name."""
    root = tmp_path / f"toy{next(_names)}"
    data = write_toy(str(root / "img"), str(root / "pan"), str(root / "pan.json"))
    if edit_json:
        edit_json(data)
        (root / "pan.json").write_text(json.dumps(data))
    if edit_files:
        edit_files(root)
    name = root.name + "_test_checks"
    paths = [str(root / "img"), str(root / "pan"), str(root / "pan.json")]
    register_panoptic(name, CATEGORIES, *paths, layout="")
    return name, root


def _segments(data, image=0):
    return data["annotations"][image]["segments_info"]


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda d: d["images"].append(dict(d["images"][0])), "image ids are not unique: .'1'."),
        (lambda d: _segments(d).append(dict(_segments(d)[0])), "image id 1: segment ids are not"),
        (
            lambda d: _segments(d)[2].update(category_id=9999),
            "segment 103: unknown category id 9999",
        ),
        (lambda d: _segments(d)[2].update(bbox=[0, float("nan"), 3, 3]), "segment 103: bbox"),
    ],
)
def test_json_problems_name_file_image_and_segment(tmp_path, edit, message):
    name, root = _toy(tmp_path, edit_json=edit)
    with pytest.raises(DatasetFormatError, match=message) as e:
        DatasetCatalog.get(name)
    assert str(root / "pan.json") in str(e.value)


def _repaint(root, old: int, new: int):
    png = root / "pan" / "000000000001.png"
    ids = rgb2id(np.asarray(Image.open(png), dtype=np.uint8))
    ids[ids == old] = new
    Image.fromarray(id2rgb(ids)).save(png)


def _truncate_jpeg(root):
    path = root / "img" / "000000000001.jpg"
    path.write_bytes(path.read_bytes()[:200])


@pytest.mark.parametrize(
    "edit,message",
    [
        # the cat (a thing, id 103) painted over by the sky: listed in the json, no pixels
        (lambda r: _repaint(r, 103, 101), r"thing segment\(s\) \[103\] of the json have no pixels"),
        # pixels of an id the json does not list
        (lambda r: _repaint(r, 104, 999), r"pixels of segment ids \[999\] that the json does not"),
        (_truncate_jpeg, "cannot decode the image .*000000000001.jpg .image id 1."),
    ],
)
def test_png_and_image_problems_name_the_files(tmp_path, edit, message):
    name, root = _toy(tmp_path, edit_files=edit)
    mapper = RegionEvalMapper(image_size=96, patch_size=16, dataset_name=name)
    with pytest.raises((DatasetFormatError, OSError), match=message):
        mapper(DatasetCatalog.get(name)[0])
    report = check_dataset(name, progress=False)
    assert len(report.problems) == 1 and re.search(message, report.problems[0])


def test_mask2former_ade_files_skip_and_count_painted_over_stuff(tmp_path):
    """Mask2Former's ADE20K preparation lists stuff before pasting things: a stuff segment whose
    pixels were all painted over stays in the json. It is skipped, counted and reported; the other
    regions are exactly those scored otherwise."""

    def add_painted_over_stuff(data):
        _segments(data).append(
            {"id": 150, "category_id": 12, "iscrowd": 0, "bbox": [0, 0, 16, 16], "area": 256}
        )

    name, root = _toy(tmp_path, edit_json=add_painted_over_stuff)
    mapper = RegionEvalMapper(image_size=96, patch_size=16, dataset_name=name)
    out = mapper(DatasetCatalog.get(name)[0])
    assert out["regions"]["empty_segments_skipped"] == 1
    assert 150 not in out["regions"]["segment_ids"].tolist()
    clean, _ = _toy(tmp_path)
    reference = RegionEvalMapper(image_size=96, patch_size=16, dataset_name=clean)(
        DatasetCatalog.get(clean)[0]
    )
    assert out["regions"]["segment_ids"].tolist() == reference["regions"]["segment_ids"].tolist()
    report = check_dataset(name, progress=False)
    assert report.ok and report.empty_segments_skipped == 1 and report.images == 2


def test_check_dataset_tool_lists_every_problem(tmp_path, capsys):
    def two_problems(root):
        _repaint(root, 103, 101)
        path = root / "img" / "000000000002.jpg"
        path.write_bytes(path.read_bytes()[:100])

    name, root = _toy(tmp_path, edit_files=two_problems)
    tool = runpy.run_path(str(ROOT / "tools" / "check_dataset.py"))
    assert tool["main"]([name, "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "2 images" in out and "2 problem(s)" in out
    assert "thing segment(s) [103]" in out and "000000000002.jpg" in out
    clean, _ = _toy(tmp_path)
    assert tool["main"]([clean, "--no-progress"]) == 0
    with pytest.raises(SystemExit):
        tool["main"](["no_such_dataset"])


def test_sem_seg_label_problems_are_listed(tmp_path):
    """A label file of the wrong size and one with a value that is no class are both reported; a
    clean file and the ignore label are not."""
    from densevlm_d2.data.datasets.sem_seg import register_sem_seg

    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    rng = np.random.default_rng(0)
    labels = {
        "a": np.full((8, 10), 1, np.uint8),  # clean
        "b": np.full((8, 12), 1, np.uint8),  # wrong size
        "c": np.array([[0, 255], [7, 2]], np.uint8).repeat(4, 0).repeat(5, 1),  # 7: no class
    }
    for stem, lab in labels.items():
        Image.fromarray(rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)).save(
            tmp_path / "img" / f"{stem}.jpg"
        )
        Image.fromarray(lab).save(tmp_path / "lab" / f"{stem}.png")
    name = f"check_sem_seg_{tmp_path.name}"
    register_sem_seg(name, str(tmp_path / "img"), str(tmp_path / "lab"), ["x", "y", "z"])
    report = check_dataset(name, progress=False)
    assert report.images == 3 and len(report.problems) == 2
    assert "b.png" in report.problems[0]
    assert "the labels are 12x8 (WxH) but the image is 10x8" in report.problems[0]
    assert "c.png" in report.problems[1] and "[7]" in report.problems[1]
