"""Text embeddings never silently belong to another CLIP: published files by their release names,
files with a .json by the model and text-tower weights it names, files that name nothing by a
comparison with the backbone's own text tower (MODEL.CLIP.TEXT_EMBEDDINGS), the disk cache by the
description beside each file."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg

import densevlm_d2
from densevlm_d2.clip import Vocabulary
from densevlm_d2.clip.text import (
    TextEmbedder,
    TextSpec,
    embeddings_model,
    load_text_embeddings,
    save_text_embeddings,
)
from densevlm_d2.modeling import CLIPViTBackbone
from tests.conftest import randomize_

NAMES = ("cat", "sky", "grass", "road", "person")


def _rows(n=2, dim=512):
    return np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)


def test_published_files_are_checked_by_their_release_names(tmp_path):
    b16 = tmp_path / "coco_panoptic_clip_hand_craft_EVACLIP_ViTB16.npy"
    openai = tmp_path / "coco_panoptic_clip_hand_craft_ViTB16.npy"
    for path in (b16, openai):
        np.save(path, _rows())
    assert embeddings_model(b16) == (("EVA02-B-16",), "by its published file name")
    assert load_text_embeddings(b16, rows=2, dim=512, model_name="EVA02-B-16").shape == (2, 512)
    assert load_text_embeddings(openai, rows=2, dim=512, model_name="ViT-B-16").shape == (2, 512)
    # the same width, another CLIP: an error naming both
    with pytest.raises(
        ValueError,
        match="holds text embeddings of ViT-B-16-quickgelu / ViT-B-16 \\(by its published file "
        "name\\) but is used with EVA02-B-16",
    ):
        load_text_embeddings(openai, rows=2, dim=512, model_name="EVA02-B-16")
    with pytest.raises(ValueError, match="of EVA02-B-16 .* used with EVA02-L-14-336"):
        load_text_embeddings(b16, rows=2, model_name="EVA02-L-14-336")
    assert embeddings_model(tmp_path / "mine.npy") is None


def test_a_json_naming_other_text_tower_weights_is_an_error(tmp_path):
    path = tmp_path / "emb.npy"
    meta = {"model": "EVA02-B-16", "weights": "aaaa", "names": ["a", "b"]}
    save_text_embeddings(torch.from_numpy(_rows()), path, meta)
    asked = []

    def digest():
        asked.append(1)
        return "bbbb"

    with pytest.raises(
        ValueError,
        match="made with another text tower: EVA02-B-16 with text-tower weights aaaa .* used "
        "with EVA02-B-16 whose text-tower weights are bbbb",
    ):
        load_text_embeddings(path, model_name="EVA02-B-16", weights=digest)
    assert asked == [1]
    assert load_text_embeddings(path, model_name="EVA02-B-16", weights="aaaa").shape == (2, 512)
    # a .json without weights: the digest is never computed
    path.with_suffix(".json").write_text(json.dumps({"model": "EVA02-B-16"}))
    load_text_embeddings(path, model_name="EVA02-B-16", weights=digest)
    assert asked == [1]


@pytest.fixture
def loaded_tiny(tiny_eva, tmp_path):
    """A tiny EVA CLIP file and a config that loads it with a precomputed-embeddings file for the
    vocabulary 'my_classes'."""
    weights = densevlm_d2.save_checkpoint(tiny_eva, tmp_path / "tiny.pt", "eva_clip")
    npy = tmp_path / "my_classes.npy"
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.MODEL.CLIP.MODEL_NAME = "EVA02-Tiny-16"
    cfg.MODEL.CLIP.CHECKPOINT = str(weights)
    cfg.MODEL.CLIP.TEXT_CACHE.ENABLED = False
    cfg.MODEL.CLIP.TEXT_EMBEDDINGS = [["my_classes", str(npy)]]
    return cfg, npy


def test_config_route_names_both_models(loaded_tiny, tiny_eva):
    cfg, npy = loaded_tiny
    vocabulary = Vocabulary.from_names(NAMES[:2], source="my_classes")
    emb = TextEmbedder(tiny_eva, "EVA02-Tiny-16", cache_dir=None)(vocabulary)
    save_text_embeddings(emb, npy, {"model": "ViT-Tiny-16"})
    backbone = CLIPViTBackbone(cfg, None)
    with pytest.raises(ValueError, match="of ViT-Tiny-16 \\(says my_classes.json\\) but is used "
                       "with EVA02-Tiny-16"):  # fmt: skip
        backbone.text_embeddings(vocabulary)
    save_text_embeddings(emb, npy, {"model": "EVA02-Tiny-16", "weights": "0" * 32})
    backbone = CLIPViTBackbone(cfg, None)
    with pytest.raises(ValueError, match=f"weights are {backbone.text_embedder.weights_digest()}"):
        backbone.text_embeddings(vocabulary)


def test_a_file_that_names_no_model_is_compared_with_the_text_tower(loaded_tiny, tiny_eva):
    cfg, npy = loaded_tiny
    vocabulary = Vocabulary.from_names(NAMES, source="my_classes")
    # made by this CLIP's text tower (the published generator's 63 prompts), no .json: accepted
    np.save(npy, TextEmbedder(tiny_eva, "EVA02-Tiny-16", cache_dir=None)(vocabulary).numpy())
    backbone = CLIPViTBackbone(cfg, None)
    assert backbone.weights_source == cfg.MODEL.CLIP.CHECKPOINT
    assert torch.equal(backbone.text_embeddings(vocabulary), torch.from_numpy(np.load(npy)))
    # made by another CLIP of the same width (another text tower), or not embeddings at all
    other = randomize_(densevlm_d2.build_clip_model("EVA02-Tiny-16"), seed=7)
    for rows in (
        TextEmbedder(other, "EVA02-Tiny-16", cache_dir=None)(vocabulary).numpy(),
        _rows(len(NAMES), backbone.embed_dim),
    ):
        np.save(npy, rows)
        with pytest.raises(
            ValueError,
            match="does not hold EVA02-Tiny-16's text embeddings: its first 4 rows \\(cat, sky, "
            "grass, road\\) agree .* by a mean cosine of",
        ):
            CLIPViTBackbone(cfg, None).text_embeddings(vocabulary)
    # a randomly initialised CLIP has no text space to compare with: the file is taken as it is
    cfg.MODEL.CLIP.CHECKPOINT = ""
    random = CLIPViTBackbone(cfg, None)
    assert random.weights_source is None
    assert random.text_embeddings(vocabulary).shape == (len(NAMES), random.embed_dim)


def test_the_disk_cache_checks_what_each_file_says(tiny_eva, tmp_path, caplog):
    emb = TextEmbedder(tiny_eva, "EVA02-Tiny-16", cache_dir=tmp_path)
    vocabulary = Vocabulary.from_names(NAMES[:3])
    spec = TextSpec(prompts=("a photo of a {}.",))
    first = emb(vocabulary, spec)
    path = emb.cache_path(vocabulary, spec)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["model"] == "EVA02-Tiny-16" and meta["weights"] == emb.weights_digest()
    # a file of another model put under this name (its .json says so): recomputed, not used
    path.with_suffix(".json").write_text(json.dumps(dict(meta, model="ViT-Tiny-16")))
    np.save(path, np.zeros_like(first.numpy()) + 0.5)
    with caplog.at_level(logging.WARNING, logger="densevlm_d2.clip.text"):
        again = TextEmbedder(tiny_eva, "EVA02-Tiny-16", cache_dir=tmp_path)(vocabulary, spec)
    assert torch.allclose(again, first) and "its .json describes" in caplog.text
    # rows of another width: recomputed too
    caplog.clear()
    np.save(path, np.full((3, 16), 0.25, np.float32))
    with caplog.at_level(logging.WARNING, logger="densevlm_d2.clip.text"):
        again = TextEmbedder(tiny_eva, "EVA02-Tiny-16", cache_dir=tmp_path)(vocabulary, spec)
    assert torch.allclose(again, first) and "16-d rows, but EVA02-Tiny-16 embeds in" in caplog.text
