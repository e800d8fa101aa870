"""CAT-Seg's aggregator and meta-architecture at the boundaries users touch: shapes, the class
selection of large vocabularies, the loss, the text path, inference and the optimiser recipe."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.modeling import build_model

import demo.register  # noqa: F401  (the demo's model EVA02-Demo-16)
import densevlm_d2
from densevlm_d2 import Vocabulary
from densevlm_d2.clip.text import TextSpec
from densevlm_d2.engine.trainer import Trainer
from densevlm_d2.modeling.cat_seg import CostAggregator
from densevlm_d2.modeling.cat_seg.spatial import window_region_mask
from densevlm_d2.modeling.meta_arch.cat_seg import sliding_windows

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["ball", "box, crate", "sky", "grass"]


def _aggregator(pad_len=8, **kw) -> CostAggregator:
    torch.manual_seed(0)
    agg = CostAggregator(
        embed_dim=16,
        feature_size=(8, 8),
        hidden_dim=32,
        text_guidance_dim=16,
        appearance_guidance_dim=16,
        decoder_dims=(32, 16),
        decoder_guidance_dims=(16, 8),
        decoder_guidance_proj_dims=(16, 8),
        num_layers=2,
        num_heads=4,
        window=4,
        pad_len=pad_len,
        **kw,
    )
    with torch.no_grad():  # non-zero padding token and guidance, so that they matter
        for p in agg.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return agg.eval()


def _inputs(b=2, t=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(b, 16, 8, 8, generator=g)
    text = torch.randn(b, t, 1, 16, generator=g)
    guidance = [
        torch.randn(b, 16, 8, 8, generator=g),
        torch.randn(b, 16, 16, 16, generator=g),
        torch.randn(b, 8, 32, 32, generator=g),
    ]
    return image, text, guidance


@pytest.mark.parametrize("pooling", [(1, 1), (2, 2)])
def test_logits_shape_and_class_permutation(pooling):
    agg = _aggregator()
    image, text, guidance = _inputs()
    with torch.no_grad():
        out = agg(image, text, guidance, pooling)
        perm = torch.tensor([3, 0, 4, 1, 2])
        permuted = agg(image, text[:, perm], guidance, pooling)
    assert out.shape == (2, 5, 32, 32) and torch.isfinite(out).all()
    # nothing in the aggregator depends on the order of the classes
    torch.testing.assert_close(permuted, out[:, perm], rtol=1e-4, atol=1e-4)


def test_large_vocabulary_keeps_the_best_matching_classes():
    agg = _aggregator(pad_len=4)
    image, text, guidance = _inputs(b=1, t=7)
    # classes 1, 3, 5 and 6 point at the image's first token: their maximum cost is highest
    for c in (1, 3, 5, 6):
        text[0, c, 0] = image[0, :, 0, 0] * (1 + c)
    with torch.no_grad():
        out = agg(image, text, guidance)
        kept = agg(image, text[:, [1, 3, 5, 6]], guidance)
    dropped = [0, 2, 4]
    assert (out[0, dropped] == -100).all()
    # the kept classes get exactly what aggregating them alone gives
    torch.testing.assert_close(out[0, [1, 3, 5, 6]], kept[0], rtol=1e-4, atol=1e-4)


def test_prompt_count_is_checked():
    agg = _aggregator()
    image, text, guidance = _inputs()
    with pytest.raises(ValueError, match="built for 1 prompts per class, got 2"):
        agg(image, torch.cat([text, text], dim=2), guidance)


def test_shifted_window_mask():
    assert window_region_mask((8, 8), 4, 0) is None
    mask = window_region_mask((8, 8), 4, 2)
    assert mask.shape == (4, 16, 16)
    assert (mask[0] == 0).all()  # the top-left window is one region
    # the bottom-right window mixes 4 regions: tokens of one region see only each other
    last = mask[-1]
    assert torch.equal(last, last.T) and (last.diagonal() == 0).all()
    assert set(last.unique().tolist()) == {-100.0, 0.0} and int((last == 0).sum()) == 4 * 4 * 4


def test_windows():
    assert sliding_windows(640, 384, 0.333) == [0, 256]
    assert sliding_windows(192, 128, 0.5) == [0, 64]
    with pytest.raises(ValueError, match="no 384-px windows"):
        sliding_windows(300, 384, 0.333)


def tiny_cfg(**overrides):
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.merge_from_file(str(ROOT / "configs" / "demo" / "cat_seg.yaml"))
    cfg.DATASETS.TRAIN = ()
    cfg.DATASETS.TEST = ()
    cfg.MODEL.CLIP.RANDOM_INIT = True
    cfg.MODEL.CLIP.TEXT_CACHE.ENABLED = False
    for k, v in overrides.items():
        node, *path = k.split(".")
        target = cfg
        for part in [node, *path[:-1]]:
            target = target[part]
        target[path[-1] if path else node] = v
    return cfg


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model(tiny_cfg())
    m.train_classes = Vocabulary.from_names(CLASSES)
    return m


def test_loss_is_binary_cross_entropy_on_one_hot_targets(model):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 8, 8, generator=g)
    targets = torch.randint(0, 4, (2, 16, 16), generator=g)
    targets[0, :3] = 255
    up = F.interpolate(logits, size=(16, 16), mode="bilinear", align_corners=False)
    expected = 0.0
    for b in range(2):
        for y in range(16):
            for x in range(16):
                label = int(targets[b, y, x])
                for c in range(4):
                    z, t = float(up[b, c, y, x]), float(label == c)
                    expected += max(z, 0) - z * t + torch.log1p(torch.exp(-torch.tensor(abs(z))))
    expected /= 2 * 4 * 16 * 16
    assert model.loss(logits, targets).item() == pytest.approx(float(expected), rel=1e-5)
    targets[1, 0, 0] = 7
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\) or 255 .* found 0..7"):
        model.loss(logits, targets)


@pytest.mark.slow
def test_training_step_and_text_gradients(model):
    model.train()
    g = torch.Generator().manual_seed(0)
    batch = [
        {
            "image": torch.randint(0, 256, (3, 128, 128), generator=g, dtype=torch.uint8),
            "sem_seg": torch.randint(0, 4, (128, 128), generator=g),
        }
        for _ in range(2)
    ]
    losses = model(batch)
    assert set(losses) == {"loss_sem_seg"} and torch.isfinite(losses["loss_sem_seg"])
    losses["loss_sem_seg"].backward()
    clip = model.backbone.model
    text_q = clip.text.transformer.resblocks[0].attn.q_proj_weight
    vis_v = clip.visual.trunk.blocks[0].attn.v_proj.weight
    assert text_q.grad is not None and text_q.grad.abs().sum() > 0
    assert vis_v.grad is not None and vis_v.grad.abs().sum() > 0
    assert clip.visual.trunk.blocks[0].attn.k_proj.weight.grad is None  # frozen
    model.zero_grad(set_to_none=True)


@pytest.mark.slow
def test_inference_scores_and_text_cache(model):
    model.eval()
    image = torch.randint(0, 256, (3, 100, 150), dtype=torch.uint8)
    out = model([{"image": image, "classes": CLASSES, "height": 50, "width": 75}])[0]["sem_seg"]
    assert out.shape == (4, 50, 75) and 0 <= out.min() and out.max() <= 1
    embedder = model.backbone.text_embedder
    computed = []
    compute = embedder.compute
    embedder.compute = lambda *a, **k: computed.append(k.get("grad", False)) or compute(*a, **k)
    try:
        cached = model.text_embeddings(CLASSES)
        assert torch.equal(model.text_embeddings(CLASSES), cached) and not cached.requires_grad
        assert computed == []  # both from the cache (filled by the forward above)
        model.train()
        trained = model.text_embeddings(CLASSES)  # the text tower trains: not the cache
        assert trained.requires_grad and computed == [True]
        text_q = model.backbone.model.text.transformer.resblocks[0].attn.q_proj_weight
        with torch.no_grad():
            text_q.add_(0.0)  # an optimiser step changes the text tower in place
        model.eval()
        again = model.text_embeddings(CLASSES)  # the stale embeddings are forgotten
        assert computed == [True, False] and torch.allclose(again, cached, atol=1e-6)
    finally:
        del embedder.compute
    no_sliding = build_model(tiny_cfg(**{"MODEL.CAT_SEG.SLIDING_WINDOW": False})).eval()
    out = no_sliding([{"image": image, "classes": CLASSES}])[0]["sem_seg"]
    assert out.shape == (4, 100, 150)


def test_prompts_are_the_first_synonym_in_each_template(model):
    """CAT-Seg's text: every template with the first synonym of each name, as given ("plain"), one
    embedding per template (the published ``A photo of a {} in the scene``)."""
    published = TextSpec(prompts="cat_seg", style="plain", synonyms="first", ensemble=False)
    assert model.text == published
    assert model.text.templates == ("A photo of a {} in the scene",)
    model.eval()
    templates = ("A photo of a {} in the scene", "{}")
    model.text = dataclasses.replace(published, prompts=templates)
    try:
        emb = model.text_embeddings(["box, crate", "sky"])
    finally:
        model.text = published
    expected = model.backbone.encode_text(
        ["A photo of a box in the scene", "box", "A photo of a sky in the scene", "sky"]
    )
    assert emb.shape == (2, 2, expected.shape[-1])
    torch.testing.assert_close(emb, expected.view(2, 2, -1), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="empty vocabulary"):
        model.text_embeddings([])


def test_bad_settings_name_the_key():
    with pytest.raises(ValueError, match="DENSE_RESIDUAL must be one of"):
        build_model(tiny_cfg(**{"MODEL.CAT_SEG.DENSE_RESIDUAL": "mean"}))
    with pytest.raises(ValueError, match="CLIP_RESOLUTION 120 is not a multiple of the patch"):
        build_model(tiny_cfg(**{"MODEL.CAT_SEG.CLIP_RESOLUTION": 120}))
    with pytest.raises(ValueError, match="no 128-px windows"):
        build_model(tiny_cfg(**{"MODEL.CAT_SEG.TEST_SIZE": 100}))


def test_optimizer_recipe(model):
    cfg = tiny_cfg(**{"SOLVER.CLIP_LR_MULTIPLIER": 0.01, "SOLVER.BASE_LR": 2e-4})
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.01
    opt = Trainer.build_optimizer(cfg, model)
    clip_ids = {id(p) for p in model.backbone.model.parameters()}
    for group in opt.param_groups:
        in_clip = {id(p) in clip_ids for p in group["params"]}
        assert len(in_clip) == 1
        assert group["lr"] == pytest.approx(2e-6 if in_clip.pop() else 2e-4)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sum(len(g["params"]) for g in opt.param_groups) == len(trainable)
    # full-model clipping: the norm of all gradients together is at most CLIP_VALUE at the step
    for p in trainable:
        p.grad = torch.ones_like(p)
    norms = []
    orig = torch.optim.AdamW.step

    def spy(self, closure=None):
        norms.append(torch.norm(torch.stack([p.grad.norm() for p in trainable])).item())
        return orig(self, closure)

    torch.optim.AdamW.step = spy
    try:
        opt.step()
    finally:
        torch.optim.AdamW.step = orig
    assert norms and norms[0] == pytest.approx(0.01, rel=1e-4)
    opt.zero_grad(set_to_none=True)
