"""Text embeddings: prompts as published, prompt sets and styles, synonyms, the ensemble switch, the
memory and disk caches, precomputed files."""

from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

import densevlm_d2
from densevlm_d2.clip import Vocabulary
from densevlm_d2.clip.prompts import (
    IMAGENET_TEMPLATES,
    PROMPT_SETS,
    VILD_TEMPLATES,
    article,
    clean_name,
    prompt_templates,
    prompts,
)
from densevlm_d2.clip.text import TextEmbedder, TextSpec, load_text_embeddings
from tests.conftest import randomize_


def V(*names):
    return Vocabulary(names=names)


def test_prompts_as_published():
    assert len(VILD_TEMPLATES) == 63
    p = prompts("motorcycle", VILD_TEMPLATES)
    assert len(p) == 63
    assert p[0] == "There is a motorcycle in the scene."
    assert p[1] == "There is the motorcycle in the scene."
    assert p[2] == "This is a photo of a motorcycle in the scene."
    assert p[52] == "This is the plastic motorcycle."
    assert prompts("elephant", VILD_TEMPLATES)[5] == "itap of an elephant."
    assert clean_name("traffic_light/Signal.") == "traffic light or signal"
    # the article looks at the raw name's first letter, as published
    assert article("apple") == "an" and article("Apple") == "a" and article("umbrella") == "an"
    assert prompts("tv, television", VILD_TEMPLATES)[8] == "This is a photo of a tv, television."


def test_prompt_sets_and_user_templates():
    assert prompt_templates("vild") is VILD_TEMPLATES and prompt_templates(["imagenet"]) is (
        IMAGENET_TEMPLATES
    )
    assert prompt_templates("cat_seg") == ("A photo of a {} in the scene",)
    assert sorted(PROMPT_SETS) == ["cat_seg", "imagenet", "vild"]
    mine = prompt_templates(["a {} photo.", "{article} {} in the wild."])
    assert mine == ("a {} photo.", "{article} {} in the wild.")
    for bad, match in (
        (["coco"], "unknown prompt set 'coco'"),
        ([], "no prompt templates"),
        (["a photo."], "unknown prompt set"),
        (["a {} and a {}."], "exactly one '{}'"),
        (["a {name}."], r"the fields \['name'\]"),
        (["a {} {."], "not a format string"),
        (["vild", "a {}."], "not both"),
        ([3], "not a string"),
    ):
        with pytest.raises(ValueError, match=match):
            prompt_templates(bad)


def test_every_prompt_set_works_with_every_style():
    """(DenseVLM's ViLD templates with the plain style used to fail with KeyError 'article'.)"""
    for name, templates in PROMPT_SETS.items():
        for style in ("densevlm", "plain"):
            out = prompts("apple", templates, style)
            assert len(out) == len(templates) and all("{" not in p for p in out), (name, style)
    assert prompts("apple", VILD_TEMPLATES, "plain")[0] == "There is an apple in the scene."
    assert prompts("Traffic_Light", ["a photo of a {}."], "plain") == [
        "a photo of a Traffic_Light."
    ]
    assert prompts("Traffic_Light", ["a photo of a {}."]) == ["This is a photo of a traffic light."]
    with pytest.raises(ValueError, match="prompt style"):
        prompts("cat", ["a {}."], "fancy")
    assert len(IMAGENET_TEMPLATES) == 80 and all(t.count("{}") == 1 for t in IMAGENET_TEMPLATES)


def test_text_spec_refuses_bad_settings():
    for kwargs, match in (
        ({"prompts": "coco"}, "unknown prompt set"),
        ({"style": "fancy"}, "prompt style"),
        ({"synonyms": "both"}, "synonyms must be one of"),
        ({"synonyms": "max", "ensemble": False}, "needs ensembled"),
    ):
        with pytest.raises(ValueError, match=match):
            TextSpec(**kwargs)
    assert TextSpec(prompts=["a {}."]).templates == ("a {}.",)


def _straightforward(model, name, templates=VILD_TEMPLATES, style="densevlm"):
    tok = open_clip.get_tokenizer("EVA02-Tiny-16")
    with torch.no_grad():
        e = F.normalize(model.encode_text(tok(prompts(name, templates, style))), dim=-1)
    return e.mean(0)


def test_embeddings_match_straightforward_computation(tiny_eva):
    emb = TextEmbedder(tiny_eva, "EVA02-Tiny-16", cache_dir=None)
    names = V("cat", "sky-other", "tv, television")
    unit = emb.compute(names, TextSpec())
    raw = emb.compute(names, TextSpec(renormalize=False))
    assert unit.shape == raw.shape == (3, 64) and unit.dtype == torch.float32
    for i, name in enumerate(names.names):
        ref = _straightforward(tiny_eva, name)
        assert torch.allclose(raw[i], ref, atol=1e-5)
        assert torch.allclose(unit[i], F.normalize(ref, dim=0), atol=1e-5)
    assert torch.allclose(unit.norm(dim=1), torch.ones(3), atol=1e-5)
    assert (raw.norm(dim=1) < 0.9999).all()  # the published 316-class files skip re-normalisation


def test_synonym_modes(tiny_eva):
    emb = TextEmbedder(tiny_eva, "EVA02-Tiny-16", cache_dir=None)
    vocab = V("tv, television", "cat")
    tv, television = (_straightforward(tiny_eva, n) for n in ("tv", "television"))
    mean = emb.compute(vocab, TextSpec(synonyms="mean"))
    assert torch.allclose(mean[0], F.normalize((tv + television) / 2, dim=0), atol=1e-5)
    first = emb.compute(vocab, TextSpec(synonyms="first"))
    assert torch.allclose(first[0], F.normalize(tv, dim=0), atol=1e-5)
    joint = emb.compute(vocab, TextSpec())
    assert not torch.allclose(joint[0], mean[0], atol=1e-3)
    assert torch.allclose(joint[1], mean[1]) and torch.allclose(joint[1], first[1])
    queries = emb.compute(vocab, TextSpec(synonyms="max"))  # one row per synonym
    assert queries.shape == (3, 64)
    assert torch.allclose(queries[1], F.normalize(television, dim=0), atol=1e-5)
    assert vocab.synonym_queries() == (("tv", "television", "cat"), (0, 0, 1))


def test_one_embedding_per_template_and_with_autograd(tiny_eva):
    emb = TextEmbedder(tiny_eva, "EVA02-Tiny-16", cache_dir=None)
    spec = TextSpec(prompts=["a photo of a {}.", "a {} in the scene."], style="plain",
                    synonyms="first", ensemble=False)  # fmt: skip
    out = emb.compute(V("dog, puppy", "cat"), spec)
    assert out.shape == (2, 2, 64) and not out.requires_grad
    ref = F.normalize(
        tiny_eva.encode_text(open_clip.get_tokenizer("EVA02-Tiny-16")(["a dog in the scene."])),
        dim=-1,
    )[0]
    assert torch.allclose(out[0, 1], ref.detach(), atol=1e-5)
    tiny_eva.requires_grad_(True)
    with_grad = emb(V("dog, puppy", "cat"), spec, grad=True)
    assert with_grad.requires_grad
    with_grad.sum().backward()
    assert tiny_eva.text.text_projection.grad is not None


def test_cache_hit_and_misses(tiny_eva, tmp_path, monkeypatch):
    emb = TextEmbedder(tiny_eva, "EVA02-Tiny-16", cache_dir=tmp_path)
    first = emb(V("cat", "grass"))
    files = sorted(tmp_path.glob("*.npy"))
    assert len(files) == 1
    arr = np.load(files[0])
    assert arr.dtype == np.float32 and arr.shape == (2, 64)  # the published metadata layout
    assert torch.equal(torch.from_numpy(arr), first)
    meta = json.loads(files[0].with_suffix(".json").read_text())
    assert meta["names"] == ["cat", "grass"] and meta["model"] == "EVA02-Tiny-16"

    calls = []
    real_compute = TextEmbedder.compute
    monkeypatch.setattr(
        TextEmbedder,
        "compute",
        lambda self, *a, **k: calls.append(a) or real_compute(self, *a, **k),
    )
    assert torch.equal(emb(V("cat", "grass")), first) and calls == []  # memory hit
    emb._memory.clear()
    assert torch.equal(emb(V("cat", "grass")), first) and calls == []  # disk hit
    emb(V("cat", "sand"))  # a changed name is a miss
    assert len(calls) == 1
    emb(V("cat", "grass"), TextSpec(renormalize=False))  # other options are a miss
    assert len(calls) == 2
    emb(V("cat", "grass"), TextSpec(prompts="imagenet", style="plain"))  # other prompts too
    assert len(calls) == 3

    other = randomize_(densevlm_d2.build_clip_model("EVA02-Tiny-16"), seed=7)  # other weights
    second = TextEmbedder(other, "EVA02-Tiny-16", cache_dir=tmp_path)(V("cat", "grass"))
    assert len(calls) == 4 and not torch.allclose(second, first)
    with torch.no_grad():  # weights changed in place (an optimiser step): a miss, memory too
        tiny_eva.text.ln_final.bias.add_(1.0)
    emb(V("cat", "grass"))
    assert len(calls) == 5 and len(list(tmp_path.glob("*.npy"))) == 6
    emb(V("cat", "grass"))
    assert len(calls) == 5  # unchanged weights: a hit


def test_cache_is_keyed_by_style(tiny_eva, tmp_path):
    emb = TextEmbedder(tiny_eva, "EVA02-Tiny-16", cache_dir=tmp_path)
    names = V("Traffic_Light", "cat")
    published = emb(names, TextSpec(prompts=["a photo of a {}."]))
    plain = emb(names, TextSpec(prompts=["a photo of a {}."], style="plain"))
    assert len(list(tmp_path.glob("*.npy"))) == 2  # two cache files, not one
    assert not torch.allclose(published[0], plain[0])  # different prompts, different rows
    spec = TextSpec(prompts=["a photo of a {}."], style="plain")
    torch.testing.assert_close(plain, emb.compute(names, spec))


def test_read_published_npy_checks_sizes(tmp_path):
    path = tmp_path / "coco_panoptic_clip_hand_craft_EVACLIP_ViTB16.npy"
    np.save(path, np.random.rand(133, 512).astype(np.float32))
    assert load_text_embeddings(path, rows=133, dim=512).shape == (133, 512)
    vocab = Vocabulary(names=tuple(f"c{i}" for i in range(150)), source="my_dataset")
    with pytest.raises(ValueError, match="133 class embeddings but the vocabulary of my_dataset"):
        load_text_embeddings(path, vocab)
    with pytest.raises(ValueError, match="512-d embeddings but the model's embedding size is 768"):
        load_text_embeddings(path, dim=768)
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        load_text_embeddings(tmp_path / "missing.npy")


def test_a_file_made_for_another_model_or_vocabulary_is_refused(tmp_path):
    path = tmp_path / "emb.npy"
    np.save(path, np.ones((2, 8), np.float32))
    path.with_suffix(".json").write_text(json.dumps({"model": "EVA02-L-14", "names": ["a", "b"]}))
    with pytest.raises(
        ValueError, match="holds text embeddings of EVA02-L-14.*used with EVA02-B-16"
    ):
        load_text_embeddings(path, V("a", "b"), model_name="EVA02-B-16")
    with pytest.raises(ValueError, match="made for other classes.*first difference at index 1"):
        load_text_embeddings(path, V("a", "c"), model_name="EVA02-L-14")
    assert load_text_embeddings(path, V("a", "b"), model_name="EVA02-L-14").shape == (2, 8)


def test_openai_style_model_text(tiny_vit):
    emb = TextEmbedder(tiny_vit, "ViT-Tiny-16", cache_dir=None)
    assert emb.compute(V("cat"), TextSpec()).shape == (1, 64)
    assert len(emb.weights_digest()) == 32


def test_damaged_cache_files_are_recomputed(tiny_eva, tmp_path, caplog):
    emb = TextEmbedder(tiny_eva, "EVA02-Tiny-16", cache_dir=tmp_path)
    names = V("cat", "sky")
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
        emb._memory.clear()
        caplog.clear()
        with caplog.at_level("WARNING"):
            again = emb(names)
        assert torch.allclose(again, good, atol=1e-6), what
        assert f"recomputing the damaged cache file {path}" in caplog.text, what
        assert torch.equal(load_text_embeddings(path, rows=2), again)  # rewritten whole
    assert not list(tmp_path.glob(".*.tmp"))


def _fill_cache(cache_dir: str, seed: int) -> list:
    model = randomize_(densevlm_d2.build_clip_model("EVA02-Tiny-16"), seed=1)
    torch.manual_seed(seed)
    return TextEmbedder(model, "EVA02-Tiny-16", cache_dir=cache_dir)(V("cat", "sky")).tolist()


@pytest.mark.slow
def test_two_processes_filling_one_cache(tmp_path):
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(2) as pool:
        a, b = pool.starmap(_fill_cache, [(str(tmp_path), 0), (str(tmp_path), 1)])
    assert np.allclose(a, b, atol=1e-6)
    (path,) = tmp_path.glob("*.npy")
    assert np.allclose(load_text_embeddings(path, rows=2).numpy(), a, atol=1e-6)
    assert not list(tmp_path.glob(".*.tmp"))


def test_published_files_with_bad_rows_are_errors(tmp_path):
    rows = np.ones((3, 4), np.float32)
    rows[1] = 0
    rows[2, 0] = np.nan
    np.save(tmp_path / "bad.npy", rows)
    with pytest.raises(ValueError, match=r"bad.npy: rows \[1, 2\] are not finite or all zero"):
        load_text_embeddings(tmp_path / "bad.npy", rows=3, dim=4)
    np.save(tmp_path / "ints.npy", np.ones((3, 4), np.int64))
    with pytest.raises(ValueError, match="float array, got int64"):
        load_text_embeddings(tmp_path / "ints.npy", rows=3, dim=4)
