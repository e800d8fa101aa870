"""Both segmenters (training-free and CAT-Seg) are as strict about their inputs as the region API:
a vocabulary is checked where it is made, an image must have finite pixels."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

import demo.register  # noqa: F401  (the demo's EVA02-Demo-16 for the CAT-Seg config)
import densevlm_d2
from densevlm_d2.clip import VocabularyError
from densevlm_d2.modeling import CLIPViTBackbone
from densevlm_d2.modeling.meta_arch import CLIPDenseSegmenter

ROOT = Path(__file__).resolve().parents[2]
MEAN, STD = [122.77, 116.75, 104.09], [68.5, 66.63, 70.32]


@pytest.fixture(scope="module")
def segmenters():
    torch.manual_seed(0)
    backbone = CLIPViTBackbone(model_name="EVA02-Tiny-16", text_cache_dir=None)
    dense = CLIPDenseSegmenter(backbone=backbone, pixel_mean=MEAN, pixel_std=STD).eval()
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.merge_from_file(str(ROOT / "configs" / "demo" / "cat_seg.yaml"))
    cfg.DATASETS.TRAIN = cfg.DATASETS.TEST = ()
    cfg.MODEL.CLIP.RANDOM_INIT = True
    cfg.MODEL.CLIP.TEXT_CACHE.ENABLED = False
    cfg.MODEL.CAT_SEG.SLIDING_WINDOW = False
    cat_seg = build_model(cfg).eval()
    return {"dense": dense, "cat_seg": cat_seg}


KINDS = ["dense", "cat_seg"]
IMAGE = torch.randint(0, 256, (3, 40, 56), dtype=torch.uint8)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "classes, match",
    [
        ("cat", r"got the string 'cat': put a single name in a list"),
        ([], "empty vocabulary"),
        (["cat", None], r"must be strings; .* NoneType at index 1"),
        (["cat", "  "], r"must not be blank; .* at index 1"),
        ({"cat", "dog"}, "ordered list"),
    ],
)
def test_bad_vocabularies_are_refused(segmenters, kind, classes, match):
    model = segmenters[kind]
    with pytest.raises(VocabularyError, match=match):
        model.segment(IMAGE, classes)
    with pytest.raises(VocabularyError, match="input 'classes'"):
        model([{"image": IMAGE, "classes": classes}])


@pytest.mark.parametrize("kind", KINDS)
def test_repeated_names_are_reported_and_segmented(segmenters, kind, caplog):
    with caplog.at_level(logging.WARNING):
        out = segmenters[kind].segment(IMAGE, ["cat", "sky", "cat"])
    assert "repeats ['cat']" in caplog.text and out.shape == (3, 40, 56)


@pytest.mark.parametrize("kind", KINDS)
def test_images_without_pixels_or_with_nan_are_refused(segmenters, kind):
    model = segmenters[kind]
    with pytest.raises(ValueError, match=r"the image has no pixels: shape \(3, 0, 56\)"):
        model.segment(torch.zeros(3, 0, 56, dtype=torch.uint8), ["cat"])
    image = IMAGE.float()
    image[0, 3, 4] = float("nan")
    image[1, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="2 pixel values that are not finite"):
        model.segment(image, ["cat"])
    with pytest.raises(ValueError, match=r"expected a \(3, H, W\) RGB image"):
        model.segment(IMAGE[0], ["cat"])
    assert torch.isfinite(model.segment(IMAGE.float(), ["cat", "sky"])).all()


def test_a_background_index_outside_the_vocabulary_is_refused(segmenters):
    model = segmenters["dense"]
    with pytest.raises(VocabularyError, match="background_index 3 is not a class index"):
        model.segment(IMAGE, ["sky", "cat", "dog"], background=3)
    with pytest.raises(VocabularyError, match="background_index -1 is not a class index"):
        model([{"image": IMAGE, "classes": ["sky", "cat"], "background_index": -1}])


def test_every_prompt_set_with_every_style_segments(segmenters):
    """(MODEL.DENSE_SEG.TEMPLATES "vild" with the plain prompt style used to fail with a bare
    KeyError: 'article'.)"""
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.merge_from_file(str(ROOT / "configs" / "sem_seg" / "eva02_b16" / "ade20k_150.yaml"))
    cfg.MODEL.DENSE_SEG.TEXT.PROMPTS = ["vild"]
    cfg.MODEL.DENSE_SEG.TEXT.PROMPT_STYLE = "plain"
    protocol = CLIPDenseSegmenter.protocol_from_config(cfg)
    model = CLIPDenseSegmenter(backbone=segmenters["dense"].backbone, **protocol).eval()
    assert model.text.templates[0] == "There is {article} {} in the scene."
    assert model.segment(IMAGE, ["apple", "sky"]).shape == (2, 40, 56)
