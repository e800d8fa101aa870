"""The library's one-image API (densevlm_d2.predictor): segmentation, region queries and comparison,
checked against the encoder and segmenter they are made of."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import densevlm_d2
from densevlm_d2.clip import Vocabulary
from densevlm_d2.modeling.backbone.clip_vit import CLIPViTBackbone
from densevlm_d2.modeling.dense_seg import class_probabilities
from densevlm_d2.modeling.meta_arch import CLIPDenseSegmenter
from densevlm_d2.predictor import OpenVocabPredictor, Segmentation, compare, image_tensor
from tests.helpers import DEMO_REGISTER, ROOT

MEAN, STD = [122.7709383, 116.7460125, 104.09373615], [68.5005327, 66.6321579, 70.3231630]
NAMES = ["cat", "wall, brick wall", "sky"]


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    backbone = CLIPViTBackbone(model_name="EVA02-Tiny-16", text_cache_dir=None)
    segmenter = CLIPDenseSegmenter(
        backbone=backbone, pixel_mean=MEAN, pixel_std=STD, short_side=64, window=64, stride=32
    )
    return OpenVocabPredictor(segmenter, name="tiny")


@pytest.fixture(scope="module")
def image():
    return Image.fromarray(np.random.default_rng(1).integers(0, 256, (70, 100, 3), dtype=np.uint8))


def test_segment_is_the_segmenters_output(predictor, image):
    result = predictor.segment(image, NAMES)
    expected = predictor.model.segment(image_tensor(image), NAMES, output_size=(70, 100))
    torch.testing.assert_close(result.scores, expected, rtol=0, atol=0)
    assert result.labels.shape == (70, 100)
    assert torch.equal(result.labels, expected.argmax(0))
    shares = result.shares()
    assert shares.sum().item() == pytest.approx(1.0)
    assert shares[1].item() == pytest.approx((result.labels == 1).float().mean().item())
    assert set(result.seconds) == {"text", "image", "total"}
    assert result.score_map("brick wall").shape == (70, 100)  # any synonym names the class
    with pytest.raises(KeyError, match="'dog' is not a class"):
        result.score_map("dog")


def test_kind_shares_add_the_thing_and_stuff_pixels():
    labels = torch.tensor([[0, 0, 1, 2]])
    scores = torch.nn.functional.one_hot(labels, 3).permute(2, 0, 1).float()
    flagged = Vocabulary.from_names(["cat", "wall", "sky"], is_thing=[True, False, False])
    assert Segmentation(flagged, scores).kind_shares() == {"thing": 0.5, "stuff": 0.5}
    assert Segmentation(Vocabulary.from_names(["a", "b", "c"]), scores).kind_shares() is None


def test_typed_vocabularies_know_the_published_things_and_stuff(predictor, image):
    result = predictor.segment(image, "cat, wall, sky")
    assert result.vocabulary.is_thing == (True, False, False)  # from the 316-class vocabulary
    assert predictor.segment(image, "cat, blorp").vocabulary.is_thing is None


def test_box_query_is_roialign_of_the_dense_map_against_the_text(predictor, image):
    query = predictor.query_box(image, (10, 5, 60, 50), NAMES)
    enc = predictor.encoder
    x, scale = enc.preprocess(image, return_scale=True)
    with torch.no_grad():
        feature = enc.encode_boxes(x, [torch.tensor([[10.0, 5, 60, 50]]) * scale])[0]
    text, owner = predictor.backbone.text_queries(NAMES, predictor.text)
    text = torch.nn.functional.normalize(text.float(), dim=-1)
    expected = class_probabilities((text @ feature)[:, None], predictor.logit_scale, owner)[:, 0]
    torch.testing.assert_close(query.probabilities, expected)
    assert query.probabilities.sum().item() <= 1.0 + 1e-5  # synonyms: a class takes its best
    assert query.mask.sum() == 50 * 45 and query.box == (10, 5, 60, 50)
    top = query.top(5)
    assert len(top) == 3 and [p for _, p in top] == sorted([p for _, p in top], reverse=True)


def test_point_query_asks_about_the_segment_under_the_point(predictor, image):
    seg = predictor.segment(image, NAMES)
    query = predictor.query_point(image, (30, 20), NAMES, seg)
    label = seg.labels[20, 30].item()
    assert query.mask[20, 30] and (seg.labels.numpy()[query.mask] == label).all()
    direct = predictor.query_mask(image, query.mask, NAMES)
    torch.testing.assert_close(query.probabilities, direct.probabilities)
    with pytest.raises(ValueError, match="outside the 100x70 image"):
        predictor.query_point(image, (100, 5), NAMES, seg)
    with pytest.raises(ValueError, match="the mask is empty"):
        predictor.query_mask(image, np.zeros((70, 100), bool), NAMES)
    with pytest.raises(ValueError, match="empty once clipped"):
        predictor.query_box(image, (50, 5, 40, 50), NAMES)
    one_pixel = np.zeros((70, 100), bool)
    one_pixel[3, 4] = True  # smaller than a token: the token under it
    assert predictor.query_mask(image, one_pixel, NAMES).probabilities.shape == (3,)


def test_prompt_sets_change_the_question_and_come_back(predictor, image):
    before = predictor.segment(image, NAMES).scores
    predictor.set_prompts("vild")  # the segmenter's own: imagenet (SCLIP)
    assert predictor.model.text.prompts == "vild" and predictor.text.prompts == "vild"
    assert not torch.equal(predictor.segment(image, NAMES).scores, before)
    predictor.set_prompts(None)
    torch.testing.assert_close(predictor.segment(image, NAMES).scores, before, rtol=0, atol=0)


def test_compare_runs_each_model_on_the_same_question(predictor, image):
    results = compare([predictor, predictor], image, "cat, sky")
    assert [r.model for r in results] == ["tiny", "tiny"]
    torch.testing.assert_close(results[0].scores, results[1].scores)
    with pytest.raises(ValueError, match="at least one predictor"):
        compare([], image, "cat")


def test_from_config_builds_the_demo_protocol(tmp_path):
    from app.catalogue import register_files

    register_files([DEMO_REGISTER])
    model = densevlm_d2.build_clip_model("EVA02-Demo-16")
    ckpt = densevlm_d2.save_checkpoint(model, tmp_path / "clip.pt", "eva_clip")
    config = ROOT / "configs" / "demo" / "sem_seg.yaml"
    predictor = OpenVocabPredictor.from_config(config, checkpoint=ckpt, name="demo")
    assert predictor.model.short_side == 128 and predictor.encoder.image_size == 128
    torch.testing.assert_close(
        predictor.backbone.model.state_dict()["logit_scale"], model.state_dict()["logit_scale"]
    )
    with pytest.raises(ValueError, match="no weights"):
        OpenVocabPredictor.from_config(config)
    with pytest.raises(FileNotFoundError, match="config file not found"):
        OpenVocabPredictor.from_config(tmp_path / "missing.yaml", checkpoint=ckpt)


def test_encoder_classify_uses_the_logit_scale(tiny_vit):
    enc = densevlm_d2.CLIPRegionEncoder(tiny_vit, "ViT-Tiny-16", image_size=64, text_cache_dir=None)
    f = torch.nn.functional.normalize(torch.randn(2, enc.embed_dim), dim=-1)
    t = torch.nn.functional.normalize(torch.randn(3, enc.embed_dim), dim=-1)
    expected = (enc.logit_scale * f @ t.T).softmax(-1)
    torch.testing.assert_close(enc.classify(f, t), expected)
    assert enc.logit_scale == pytest.approx(float(tiny_vit.logit_scale.exp()))
    with pytest.raises(ValueError, match="dimension"):
        enc.classify(f, t[:, :5])


def test_cat_seg_answers_the_same_questions(tmp_path, image):
    from app.catalogue import register_files

    register_files([DEMO_REGISTER])
    ckpt = densevlm_d2.save_checkpoint(
        densevlm_d2.build_clip_model("EVA02-Demo-16"), tmp_path / "clip.pt", "eva_clip"
    )
    config = ROOT / "configs" / "demo" / "cat_seg.yaml"
    predictor = OpenVocabPredictor.from_config(config, checkpoint=ckpt, name="cat-seg")
    assert predictor.encoder.image_size == 128  # its CLIP resolution
    result = predictor.segment(image, NAMES)
    assert result.scores.shape == (3, 70, 100) and 0 <= result.scores.min() <= 1
    assert predictor.query_box(image, (10, 5, 60, 50), NAMES).probabilities.shape == (3,)
    predictor.set_prompts("imagenet")  # region queries only: the cost volume keeps its templates
    assert predictor.model.text.prompts != "imagenet" and predictor.text.prompts == "imagenet"


def test_queries_on_one_image_share_its_dense_map(predictor, image, monkeypatch):
    calls = []
    encode = predictor.encoder.encode_dense
    monkeypatch.setattr(predictor.encoder, "encode_dense", lambda x: calls.append(1) or encode(x))
    predictor._dense_cache = None
    first = predictor.query_box(image, (10, 5, 60, 50), NAMES).probabilities
    predictor.query_box(image, (0, 0, 30, 30), NAMES)
    predictor.query_mask(image, np.ones((70, 100), bool), NAMES)
    assert len(calls) == 1  # one dense pass for three queries
    predictor.query_box(image.transpose(Image.FLIP_LEFT_RIGHT), (10, 5, 60, 50), NAMES)
    assert len(calls) == 2  # another image
    weight = next(predictor.backbone.model.visual.parameters())
    saved = weight.detach().clone()
    with torch.no_grad():
        weight.mul_(1.5)  # weights changed in place
        again = predictor.query_box(image, (10, 5, 60, 50), NAMES).probabilities
        weight.copy_(saved)
    assert len(calls) == 3 and not torch.equal(again, first)
