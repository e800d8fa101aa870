"""Dense prediction and its drawing (the app's, tools/predict.py's and the demo's pictures)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import densevlm_d2
from densevlm_d2.visualization import (
    dense_prediction,
    draw_dense_prediction,
    draw_region_query,
    draw_score_map,
    draw_segmentation,
    overlay_labels,
    palette,
    side_by_side,
)


@pytest.fixture
def encoder(tiny_vit):
    return densevlm_d2.CLIPRegionEncoder(
        tiny_vit, "ViT-Tiny-16", image_size=96, text_cache_dir=None
    )


@pytest.fixture
def image():
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 80, 3), dtype=np.uint8))


NAMES = ["cat", "sky", "grass"]


def test_dense_prediction(encoder, image):
    classifier = encoder.text_embeddings(NAMES)
    labels = dense_prediction(encoder, image, classifier)
    assert labels.shape == (50, 80) and labels.dtype == torch.int64
    assert 0 <= labels.min() and labels.max() < 3
    # the top-left pixel takes the class of the top-left token
    with torch.no_grad():
        token = encoder.encode_dense(encoder.preprocess(image))[0, :, 0, 0]
    assert labels[0, 0] == (classifier @ token).argmax()


def test_palette_colours_are_distinct_for_any_vocabulary():
    for n in (0, 5, 22, 150, 847):
        colours = palette(n)
        assert len(colours) == n and len(set(colours)) == n
        assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in colours)
    # the first classes get well separated colours (no two of the first 12 closer than 60 in RGB;
    # detectron2's seeded random colours gave classes 4 and 5 the same one)
    first = np.array(palette(12), dtype=float)
    gaps = np.linalg.norm(first[:, None] - first[None], axis=-1) + np.eye(12) * 1e9
    assert gaps.min() > 60


def test_overlay_blends_each_pixel_with_its_class_colour():
    image = np.full((4, 6, 3), 100, np.uint8)
    labels = np.zeros((4, 6), np.int64)
    labels[:, 3:] = 1
    labels[0, 0] = 7  # void: no colour
    out = overlay_labels(image, labels, [(200, 0, 0), (0, 0, 200)], alpha=0.5, outline=False)
    assert out[1, 1].tolist() == [150, 50, 50] and out[1, 4].tolist() == [50, 50, 150]
    assert out[0, 0].tolist() == [100, 100, 100]
    edged = overlay_labels(image, labels, [(200, 0, 0), (0, 0, 200)], alpha=0.5)
    assert edged[2, 3].tolist() == [0, 0, 100]  # a border pixel: the darkened class colour


def test_segmentation_picture_has_a_legend_and_marks_random_weights(encoder, image):
    labels = dense_prediction(encoder, image, encoder.text_embeddings(NAMES))
    plain = draw_dense_prediction(image, labels, NAMES)
    assert plain.shape == (50, 80, 3) and not np.array_equal(plain, np.asarray(image))
    picture = draw_segmentation(image, labels, NAMES, title="tiny")
    assert picture.shape[0] > 256 and picture.shape[1] > 80 * 256 // 50  # enlarged, legend beside
    marked = draw_segmentation(image, labels, NAMES, title="tiny", random_weights=True)
    assert tuple(marked[2, 2]) == (190, 0, 50)  # the title bar turns red
    assert tuple(picture[2, 2]) != (190, 0, 50)
    # the legend shows every class's colour (absent ones too, their names greyed)
    colours = {tuple(c) for c in palette(3)}
    legend = picture[30:, 80 * 256 // 50 + 5 :].reshape(-1, 3)
    assert {tuple(int(v) for v in c) for c in legend} >= colours
    with pytest.raises(ValueError, match="2 colours for 3 classes"):
        draw_segmentation(image, labels, NAMES, colors=[(0, 0, 0)] * 2)


def test_score_map_and_region_pictures(image):
    scores = np.linspace(0, 1, 50 * 80, dtype=np.float32).reshape(50, 80)
    assert draw_score_map(image, scores, "cat").shape[0] == 256 + 25
    mask = np.zeros((50, 80), bool)
    mask[10:20, 10:30] = True
    picture = draw_region_query(image, mask, [("cat", 0.7), ("sky", 0.3)], title="q")
    assert picture.ndim == 3
    with pytest.raises(ValueError, match="for an image of 80x50"):
        draw_score_map(image, scores[:10], "cat")
    assert side_by_side([picture, picture]).shape[1] == 2 * picture.shape[1] + 12


def test_predict_tool_runs(tmp_path):
    import runpy
    from pathlib import Path

    tool = Path(__file__).resolve().parents[1] / "tools" / "predict.py"
    out = tmp_path / "dense.png"
    runpy.run_path(str(tool))["main"](
        [
            "--model",
            "EVA02-Tiny-16",
            "--random-init",
            "--short-side",
            "64",
            "--window",
            "64",
            "--vocabulary",
            "cat, sky",
            "--output",
            str(out),
        ]
    )
    assert Image.open(out).size[1] > 256  # the picture with its title and legend
