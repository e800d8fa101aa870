"""Text embeddings: prompts as published, normalisation switch, synonyms, the on-disk cache."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

import densevlm_d2
from densevlm_d2.clip.text import (
    TEMPLATES,
    TextEmbedder,
    article,
    clean_name,
    load_text_embeddings,
    prompts,
)
from tests.conftest import randomize_


def test_prompts_as_published():
    assert len(TEMPLATES) == 63
    p = prompts("motorcycle")
    assert len(p) == 63
    assert p[0] == "There is a motorcycle in the scene."
    assert p[1] == "There is the motorcycle in the scene."
    assert p[2] == "This is a photo of a motorcycle in the scene."
    assert p[52] == "This is the plastic motorcycle."
    assert prompts("elephant")[5] == "itap of an elephant."
    assert clean_name("traffic_light/Signal.") == "traffic light or signal"
    # the article looks at the raw name's first letter, as published
    assert article("apple") == "an" and article("Apple") == "a" and article("umbrella") == "an"
    assert prompts("tv, television")[8] == "This is a photo of a tv, television."


def _straightforward(model, name):
    tok = open_clip.get_tokenizer("EVA02-Tiny-16")
    with torch.no_grad():
        e = F.normalize(model.encode_text(tok(prompts(name))), dim=-1)
    return e.mean(0)


def test_embeddings_match_straightforward_computation(tiny_eva):
    emb = TextEmbedder(tiny_eva, "EVA02-Tiny-16", cache_dir=None)
    names = ["cat", "sky-other", "tv, television"]
    unit = emb.compute(names)
    raw = emb.compute(names, renormalize=False)
    assert unit.shape == raw.shape == (3, 64) and unit.dtype == torch.float32
    for i, name in enumerate(names):
        ref = _straightforward(tiny_eva, name)
        assert torch.allclose(raw[i], ref, atol=1e-5)
        assert torch.allclose(unit[i], F.normalize(ref, dim=0), atol=1e-5)
    assert torch.allclose(unit.norm(dim=1), torch.ones(3), atol=1e-5)
    assert (raw.norm(dim=1) < 0.9999).all()  # the published 316-class files skip re-normalisation


def test_split_synonyms(tiny_eva):
    emb = TextEmbedder(tiny_eva, "EVA02-Tiny-16", cache_dir=None)
    split = emb.compute(["tv, television"], synonyms="split")[0]
    ref = F.normalize(
        (_straightforward(tiny_eva, "tv") + _straightforward(tiny_eva, "television")) / 2, dim=0
    )
    assert torch.allclose(split, ref, atol=1e-5)
    assert not torch.allclose(split, emb.compute(["tv, television"])[0], atol=1e-3)
    with pytest.raises(ValueError, match="synonyms"):
        emb.compute(["a"], synonyms="both")
    with pytest.raises(ValueError, match="empty class vocabulary"):
        emb.compute([])


def test_cache_hit_and_misses(tiny_eva, tmp_path, monkeypatch):
    emb = TextEmbedder(tiny_eva, "EVA02-Tiny-16", cache_dir=tmp_path)
    first = emb(["cat", "grass"])
    files = sorted(tmp_path.glob("*.npy"))
    assert len(files) == 1
    arr = np.load(files[0])
    assert arr.dtype == np.float32 and arr.shape == (2, 64)  # the published metadata layout
    assert torch.equal(torch.from_numpy(arr), first)

    calls = []
    real_compute = TextEmbedder.compute
    monkeypatch.setattr(
        TextEmbedder,
        "compute",
        lambda self, *a, **k: calls.append(a) or real_compute(self, *a, **k),
    )
    assert torch.equal(emb(["cat", "grass"]), first) and calls == []  # hit
    emb(["cat", "sand"])  # a changed name is a miss
    assert len(calls) == 1
    emb(["cat", "grass"], renormalize=False)  # other options are a miss
    assert len(calls) == 2

    other = randomize_(densevlm_d2.build_clip_model("EVA02-Tiny-16"), seed=7)  # other weights
    second = TextEmbedder(other, "EVA02-Tiny-16", cache_dir=tmp_path)(["cat", "grass"])
    assert len(calls) == 3 and not torch.allclose(second, first)
    with torch.no_grad():  # weights changed in place: a miss after reset_digest()
        tiny_eva.text.ln_final.bias.add_(1.0)
    emb.reset_digest()
    emb(["cat", "grass"])
    assert len(calls) == 4
    assert len(list(tmp_path.glob("*.npy"))) == 5
    emb(["cat", "grass"])
    assert len(calls) == 4  # unchanged weights: a hit without recomputing the digest's input
    with torch.no_grad():  # changed in place again: detected without reset_digest()
        tiny_eva.text.ln_final.bias.mul_(2.0)
    emb(["cat", "grass"])
    assert len(calls) == 5 and len(list(tmp_path.glob("*.npy"))) == 6


def test_read_published_npy_checks_sizes(tmp_path):
    path = tmp_path / "coco_panoptic_clip_hand_craft_EVACLIP_ViTB16.npy"
    np.save(path, np.random.rand(133, 512).astype(np.float32))
    assert load_text_embeddings(path, num_classes=133, dim=512).shape == (133, 512)
    with pytest.raises(ValueError, match="133 class embeddings but the vocabulary has 150 classes"):
        load_text_embeddings(path, num_classes=150)
    with pytest.raises(ValueError, match="512-d embeddings but the model's embedding size is 768"):
        load_text_embeddings(path, dim=768)
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        load_text_embeddings(tmp_path / "missing.npy")


def test_openai_style_model_text(tiny_vit):
    emb = TextEmbedder(tiny_vit, "ViT-Tiny-16", cache_dir=None)
    assert emb.compute(["cat"]).shape == (1, 64)
    assert len(emb.weights_digest()) == 32


def test_damaged_cache_files_are_recomputed(tiny_eva, tmp_path, caplog):
    emb = TextEmbedder(tiny_eva, "EVA02-Tiny-16", cache_dir=tmp_path)
    names = ["cat", "sky"]
    good = emb(names)
    (path,) = tmp_path.glob("*.npy")
    damages = {
        "truncated": lambda: path.write_bytes(path.read_bytes()[:40]),
        "nan": lambda: np.save(path, np.full((2, 64), np.nan, np.float32)),
        "zero": lambda: np.save(path, np.zeros((2, 64), np.float32)),
        "shape": lambda: np.save(path, np.ones((3, 64), np.float32) / 8),
        "float64": lambda: np.save(path, good.double().numpy()),
    }
    for what, damage in damages.items():
        damage()
        caplog.clear()
        with caplog.at_level("WARNING"):
            again = emb(names)
        assert torch.allclose(again, good, atol=1e-6), what
        assert f"recomputing the damaged cache file {path}" in caplog.text, what
        assert torch.equal(load_text_embeddings(path, 2), again)  # rewritten whole
    assert not list(tmp_path.glob(".*.tmp"))


def _fill_cache(cache_dir: str, seed: int) -> list:
    model = randomize_(densevlm_d2.build_clip_model("EVA02-Tiny-16"), seed=1)
    torch.manual_seed(seed)
    return TextEmbedder(model, "EVA02-Tiny-16", cache_dir=cache_dir)(["cat", "sky"]).tolist()


def test_two_processes_filling_one_cache(tmp_path):
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(2) as pool:
        a, b = pool.starmap(_fill_cache, [(str(tmp_path), 0), (str(tmp_path), 1)])
    assert np.allclose(a, b, atol=1e-6)
    (path,) = tmp_path.glob("*.npy")
    assert np.allclose(load_text_embeddings(path, 2).numpy(), a, atol=1e-6)
    assert not list(tmp_path.glob(".*.tmp"))


def test_published_files_with_bad_rows_are_errors(tmp_path):
    rows = np.ones((3, 4), np.float32)
    rows[1] = 0
    rows[2, 0] = np.nan
    np.save(tmp_path / "bad.npy", rows)
    with pytest.raises(ValueError, match=r"bad.npy: rows \[1, 2\] are not finite or all zero"):
        load_text_embeddings(tmp_path / "bad.npy", 3, 4)
    np.save(tmp_path / "ints.npy", np.ones((3, 4), np.int64))
    with pytest.raises(ValueError, match="float array, got int64"):
        load_text_embeddings(tmp_path / "ints.npy", 3, 4)


def test_plain_prompt_style_puts_the_name_in_as_written():
    from densevlm_d2.clip.text import IMAGENET_TEMPLATES, prompts

    assert len(IMAGENET_TEMPLATES) == 80 and all(t.count("{}") == 1 for t in IMAGENET_TEMPLATES)
    assert prompts("Traffic_Light", ["a photo of a {}."], "plain") == [
        "a photo of a Traffic_Light."
    ]
    # the published style cleans the name and prefixes "This is"
    assert prompts("Traffic_Light", ["a photo of a {}."]) == ["This is a photo of a traffic light."]
    with pytest.raises(ValueError, match="prompt style"):
        prompts("cat", ["a {}."], "fancy")


def test_prompt_styles_are_cached_apart(tiny_eva, tmp_path):
    emb = TextEmbedder(tiny_eva, "EVA02-Tiny-16", cache_dir=tmp_path)
    names, templates = ["Traffic_Light", "cat"], ["a photo of a {}."]
    published = emb(names, templates)
    plain = emb(names, templates, style="plain")
    assert len(list(tmp_path.glob("*.npy"))) == 2  # two cache files, not one
    assert not torch.allclose(published[0], plain[0])  # different prompts, different rows
    torch.testing.assert_close(plain, emb.compute(names, templates, style="plain"))
    torch.testing.assert_close(emb(names, templates), published)  # hits its own file
    # the published style's cache key is what it was before prompt styles existed: existing cache
    # files stay valid
    fields = {"model": emb.model_name, "weights": emb.weights_digest(), "names": names,
              "templates": templates, "synonyms": "joint", "renormalize": True}  # fmt: skip
    before = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]
    assert emb.cache_key(names, templates, "joint", True) == before
