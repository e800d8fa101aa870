"""The app's actions without a browser: what each button returns, and every error as a status
line (never an exception) that names the problem."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app.catalogue import DEMO_MODELS, Catalogue
from app.handlers import KEEP, Handlers, parse_box
from densevlm_d2.data.vocabulary import dataset_vocabulary
from tests.helpers import put_in_hub_cache

VOCAB = "ball, box, sky, grass, water"


@pytest.fixture(scope="module")
def handlers(demo_dir):
    catalogue = Catalogue.discover(demo_dir, zoo=False)
    known = [dataset_vocabulary("densevlm_demo_world_val")]
    return Handlers(catalogue, known, max_pixels=200_000, max_classes=20)


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (96, 144, 3), dtype=np.uint8))


DENSEVLM, STUDENT = DEMO_MODELS["densevlm"], DEMO_MODELS["student"]


def test_the_demo_models_are_found_and_paired(demo_dir, tmp_path):
    catalogue = Catalogue.discover(demo_dir, zoo=False)
    assert catalogue.labels == [DENSEVLM, STUDENT]  # DenseVLM first: the default model
    assert catalogue.default_pair() == (STUDENT, DENSEVLM)
    assert Catalogue.discover(tmp_path, zoo=False).labels == []  # no demo run: no demo models


def test_models_dir_offers_its_files_only(tmp_path, demo_dir):
    (tmp_path / "a.pt").write_bytes((demo_dir / "models" / "student.pt").read_bytes())
    (tmp_path / "b.pt").write_bytes(b"")
    (tmp_path / "b.pt.json").write_text('{"model": "EVA02-Demo-16"}')
    (tmp_path / "notes.txt").write_text("not weights")
    catalogue = Catalogue.discover(None, tmp_path, models_arch="EVA02-Demo-16", zoo=False)
    assert catalogue.labels == ["file: a.pt (EVA02-Demo-16)", "file: b.pt (EVA02-Demo-16)"]
    with pytest.raises(FileNotFoundError, match="no such folder"):
        Catalogue.discover(None, tmp_path / "missing", zoo=False)


def test_segment_returns_picture_legend_and_timings(handlers, image):
    picture, legend, status = handlers.segment(image, VOCAB, "model default", DENSEVLM)
    assert picture.ndim == 3 and picture.shape[0] >= 256  # enlarged, with the legend beside
    for name in ("ball", "box", "sky", "grass", "water"):
        assert f"<td class='name'>{name}</td>" in legend
    assert "things <b>" in legend and "stuff" in legend  # the demo's flags are known
    assert DENSEVLM in status and "image" in status and "s" in status
    # the same question again is answered from the cache, and says so
    assert "cached result" in handlers.segment(image, VOCAB, "model default", DENSEVLM)[2]
    # another prompt set is another question
    assert "cached" not in handlers.segment(image, VOCAB, "imagenet", DENSEVLM)[2]


def test_unknown_kinds_ask_for_a_mark(handlers, image):
    legend = handlers.segment(image, "ball, zebra", "model default", DENSEVLM)[1]
    assert "not known for every class" in legend
    legend = handlers.segment(image, "ball, zebra [thing]", "model default", DENSEVLM)[1]
    assert "things <b>100.0%</b>" in legend


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda h, im: h.segment(im, "   ", "vild", DENSEVLM), "the vocabulary is empty"),
        (lambda h, im: h.segment(None, VOCAB, "vild", DENSEVLM), "no image"),
        (lambda h, im: h.segment(im.resize((600, 400)), VOCAB, "vild", DENSEVLM),
         "the image is too large: 600x400 = 0.2 megapixels, the app takes at most 0.2"),
        (lambda h, im: h.segment(im, "a, , b", "vild", DENSEVLM), "empty name between commas"),
        (lambda h, im: h.segment(im, ", ".join("abcdefghijklmnopqrstuvwxyz"), "vild", DENSEVLM),
         "26 classes: the app takes at most 20"),
        (lambda h, im: h.segment(im, VOCAB, "vild", "zoo: nothing"), "no model 'zoo: nothing'"),
        (lambda h, im: h.segment(im, VOCAB, "vild", None), "no model chosen"),
        (lambda h, im: h.query_box(im, VOCAB, "vild", DENSEVLM, "1, 2, 3"), "four numbers"),
        (lambda h, im: h.query_box(im, VOCAB, "vild", DENSEVLM, "50, 50, 10, 10"), "empty once"),
        (lambda h, im: h.score_map(im, VOCAB, "vild", DENSEVLM, "zebra"), "'zebra' is not a class"),
    ],
)  # fmt: skip
def test_errors_are_status_lines(handlers, image, call, message):
    *kept, status = call(handlers, image)
    assert status.startswith("**Error:**") and message in status.replace("&#x27;", "'")
    assert all(k is KEEP for k in kept)  # the page keeps what it showed


def test_region_queries_give_a_top5(handlers, image):
    picture, top, status = handlers.query_box(
        image, VOCAB, "model default", DENSEVLM, "10 10 80 60"
    )
    assert list(top) and len(top) == 5 and 0.99 < sum(top.values()) <= 1.0 + 1e-6
    assert "the box (10, 10, 80, 60)" in status
    picture, top, status = handlers.query_point(image, VOCAB, "model default", DENSEVLM, 20, 30)
    assert len(top) == 5 and "the segment under (20, 30)" in status


def test_compare_shows_both_models(handlers, image):
    a, b, table, status = handlers.compare(image, VOCAB, "model default", STUDENT, DENSEVLM)
    assert a.shape[2] == b.shape[2] == 3
    assert f"<td>{STUDENT}</td>" in table and f"<td>{DENSEVLM}</td>" in table
    assert table.count("%</td>") == 4  # things and stuff for each model
    assert STUDENT in status and DENSEVLM in status


def test_parse_box():
    assert parse_box(" 1, 2.5 3,4 ") == (1.0, 2.5, 3.0, 4.0)
    with pytest.raises(ValueError, match="four numbers"):
        parse_box("1, 2, x, 4")


def test_cached_zoo_entries_are_offered_without_network(offline_hub, tmp_path):
    from densevlm_d2.clip.hub import MODEL_ZOO

    assert not [c for c in Catalogue.discover(None).labels if c.startswith("zoo:")]
    entry = MODEL_ZOO["densevlm-eva02-b16"]
    source = tmp_path / "weights.pt"
    source.write_bytes(b"stand-in: the menu reads no weights")
    link = put_in_hub_cache(offline_hub, entry.files[0].repo_id, entry.files[0].filename, source)
    catalogue = Catalogue.discover(None)
    assert catalogue.labels == ["zoo: densevlm-eva02-b16"]
    choice = catalogue.choices["zoo: densevlm-eva02-b16"]
    assert choice.checkpoint == str(link) and choice.opts == ("MODEL.CLIP.MODEL_NAME", entry.model)
