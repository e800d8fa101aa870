"""Student families beyond EVA02: OpenAI ViT-B/16 and L/14(-336), SigLIP 2 and PE-Core.

Each family's dense features are checked against its upstream open_clip model (random weights):
the image embedding for class-token models, one-token equality for attention-pooled ones; position
embeddings at other sizes against timm's own resizing (``dynamic_img_size``); the exported state
dict loaded by upstream ``open_clip.create_model`` strictly.
"""

from __future__ import annotations

import gc

import open_clip
import pytest
import timm
import torch
from detectron2.config import get_cfg
from timm.layers import resample_abs_pos_embed

import densevlm_d2
from densevlm_d2.clip.checkpoint import export_state_dict, load_checkpoint
from densevlm_d2.clip.finetune import attention_qv_parameters
from densevlm_d2.clip.text import TextEmbedder, TextSpec, load_tokenizer
from densevlm_d2.clip.towers import PETower, SigLIPTower, timm_rope_table, vision_tower
from densevlm_d2.modeling import CLIPViTBackbone
from tests.helpers import ROOT

TINY_POOLED = {"ViT-Tiny-16-MAP": SigLIPTower, "PE-Core-Tiny-16": PETower}
CLOSE = dict(atol=1e-5, rtol=1e-5)


def _model(name, seed=0, **kwargs):
    """An upstream open_clip model with every weight drawn at a scale that keeps activations of
    order one (the models' own initialisations shrink some heads to ~1e-6, where any comparison
    would pass)."""
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None, **kwargs).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.normal_(0, p[0].numel() ** -0.5)
            else:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def _head_of_one_token(visual, token):
    """Upstream: the trunk's final norm, timm's attention-pool head and open_clip's projection on
    a one-token sequence."""
    trunk = visual.trunk
    return visual.head(trunk.forward_head(trunk.norm(token)))


def _dynamic_trunk(visual):
    """The same trunk as timm builds it for any input size (``dynamic_img_size``), same weights."""
    trunk = visual.trunk
    twin = timm.create_model(
        trunk.default_cfg["architecture"],
        num_classes=getattr(trunk.head, "out_features", 0),
        dynamic_img_size=True,
    ).eval()
    twin.load_state_dict(trunk.state_dict(), strict=True)
    return twin


# -- tiny models of the families' timm classes: the logic -----------------------------------------
@pytest.mark.parametrize("name", sorted(TINY_POOLED))
def test_pooled_tower_picked_and_image_equals_encode_image(name):
    model = _model(name)
    tower = vision_tower(model.visual)
    assert type(tower) is TINY_POOLED[name]
    assert tower.num_prefix_tokens == (0 if name == "ViT-Tiny-16-MAP" else 1)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        out = tower.forward(x, image=True)
        assert out.dense.shape == (2, 64, 14, 14)
        torch.testing.assert_close(out.image, model.encode_image(x), **CLOSE)


@pytest.mark.parametrize("name", sorted(TINY_POOLED))
def test_dense_feature_of_one_token_is_the_pooled_embedding(name):
    model = _model(name)
    tower = vision_tower(model.visual)
    token = torch.randn(3, 1, tower.width) * 3
    with torch.no_grad():
        expected = _head_of_one_token(model.visual, token)  # (3, D)
        got = tower.project_tokens(token)  # (3, 1, D)
    assert got.shape == (3, 1, tower.output_dim)
    torch.testing.assert_close(got[:, 0], expected, **CLOSE)
    # and it is not any pooled embedding: two tokens pool to something else
    with torch.no_grad():
        two = torch.cat([token[:1], token[1:2]], dim=1)
        pooled = _head_of_one_token(model.visual, two)
        assert not torch.allclose(pooled, expected[:1], atol=0.1, rtol=0.1)
    assert expected.abs().mean() > 0.1  # a comparison of numbers that are not all near zero


def test_siglip_one_token_image_equals_encode_image():
    """An image of one patch (1x1 grid) through the whole tower is the model's image embedding."""
    model = _model("ViT-Tiny-16-MAP", force_image_size=16)
    tower = vision_tower(model.visual)
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        dense = tower.forward(x, normalize=False).dense
    assert dense.shape == (4, 64, 1, 1)
    torch.testing.assert_close(dense.flatten(1), model.encode_image(x), **CLOSE)


@pytest.mark.parametrize("name", sorted(TINY_POOLED))
def test_other_sizes_resized_as_timm_does(name):
    """Position embeddings (and PE's RoPE table) at a non-square, non-native grid: the same tokens
    as timm's own trunk built for dynamic input sizes."""
    model = _model(name)
    tower = vision_tower(model.visual)
    twin = _dynamic_trunk(model.visual)
    x = torch.randn(1, 3, 160, 288)
    with torch.no_grad():
        out = tower.forward(x, image=True, block_indices=(1,))
        expected = twin.forward_features(x)
        torch.testing.assert_close(out.image, model.visual.head(twin.forward_head(expected)))
    p = tower.num_prefix_tokens
    tokens = out.blocks[1].flatten(2).transpose(1, 2)  # the last block, run as usual
    torch.testing.assert_close(twin.norm(tokens), expected[:, p:], **CLOSE)
    assert out.grid == (10, 18)


def test_pe_rope_table_is_the_module_table_at_the_pretrained_grid():
    rope = _model("PE-Core-Tiny-16").visual.trunk.rope
    assert (rope.grid_offset, rope.grid_indexing) == (1.0, "xy")  # PE's settings, not EVA's
    torch.testing.assert_close(timm_rope_table(rope, (14, 14)), rope.get_embed(), atol=0, rtol=0)
    assert not torch.equal(timm_rope_table(rope, (10, 18))[:10], rope.get_embed()[:10])


def test_pooled_tower_refuses_the_cls_residual_and_freezes_the_latent_query():
    backbone = CLIPViTBackbone(
        model_name="ViT-Tiny-16-MAP", random_init=True, finetune="full", text_cache_dir=None
    )
    with pytest.raises(ValueError, match="pooling head.*use 'token'"):
        backbone.features(torch.randn(1, 3, 32, 32), dense_residual="cls")
    pool = backbone.model.visual.trunk.attn_pool
    assert not pool.latent.requires_grad and not pool.q.weight.requires_grad
    assert pool.kv.weight.requires_grad and pool.mlp.fc1.weight.requires_grad
    assert backbone.export_formats == ("open_clip",)


@pytest.mark.parametrize("name", sorted(TINY_POOLED))
def test_last_blocks_train_through_the_dense_path(name):
    backbone = CLIPViTBackbone(
        model_name=name,
        random_init=True,
        finetune="blocks",
        trainable_blocks=1,
        text_cache_dir=None,
    )
    backbone.train()
    backbone(torch.randn(2, 3, 48, 64))["dense"].square().sum().backward()
    trainable = [n for n, p in backbone.model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("visual.trunk.blocks.1.") for n in trainable)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in backbone.parameters()
               if p.requires_grad)  # fmt: skip


def test_attention_finetuning_refuses_fused_timm_projections():
    with pytest.raises(ValueError, match="fused qkv projection"):
        attention_qv_parameters(_model("ViT-Tiny-16-MAP"))


def test_tiny_map_student_embeds_text_offline():
    """The tiny SigLIP-layout config uses open_clip's CLIP tokenizer (no Hugging Face files)."""
    backbone = CLIPViTBackbone(model_name="ViT-Tiny-16-MAP", random_init=True, text_cache_dir=None)
    emb = backbone.text_embeddings(["cat", "sky"], TextSpec(prompts=("a photo of a {}.",)))
    assert emb.shape == (2, 64) and torch.allclose(emb.norm(dim=-1), torch.ones(2))


def test_missing_hf_tokenizer_is_a_clear_error(monkeypatch):
    def no_transformers(name, **kwargs):
        raise ModuleNotFoundError("No module named 'transformers'")

    monkeypatch.setattr(open_clip, "get_tokenizer", no_transformers)
    with pytest.raises(RuntimeError, match=r"ViT-B-16-SigLIP2.*timm/ViT-B-16-SigLIP2.*transformers"
                       r".*MODEL.CLIP.TEXT_EMBEDDINGS"):  # fmt: skip
        load_tokenizer("ViT-B-16-SigLIP2")


def test_names_and_patch_sizes():
    for name, patch in [("ViT-L-14", 14), ("ViT-L-14-336-quickgelu", 14), ("ViT-B-16-SigLIP2", 16),
                        ("PE-Core-B-16", 16), ("ViT-Tiny-16-MAP", 16)]:  # fmt: skip
        assert densevlm_d2.clip.models.patch_size_of(name) == patch


def test_openai_l14_dense_at_672_on_the_meta_device():
    """Full-size ViT-L/14-336 sizing at 672 px without memory: 48 x 48 tokens, 768 channels."""
    with torch.device("meta"):
        model = open_clip.create_model("ViT-L-14-336-quickgelu", pretrained=None, device="meta")
        out = vision_tower(model.visual).forward(torch.empty(1, 3, 672, 672), image=True)
    assert out.dense.shape == (1, 768, 48, 48) and out.image.shape == (1, 768)


# -- full-size families against upstream open_clip, and their export ------------------------------
def _export_and_load_upstream(model, name, **kwargs):
    """Change a trainable block as training would, export in the open_clip layout, and load it into
    a new upstream ``open_clip.create_model(name)`` strictly; returns the loaded model."""
    block = vision_tower(model.visual).num_blocks - 1
    candidates = (f"visual.trunk.blocks.{block}.mlp.fc2.weight",
                  f"visual.transformer.resblocks.{block}.mlp.c_proj.weight")  # fmt: skip
    key = next(k for k in candidates if k in model.state_dict())
    with torch.no_grad():
        model.state_dict()[key].add_(torch.randn_like(model.state_dict()[key]))
    state = export_state_dict(model, "open_clip")
    changed = state[key].clone()
    with pytest.raises(ValueError, match="eva_clip layout exists only for EVA02"):
        export_state_dict(model, "eva_clip")
    del model
    gc.collect()
    upstream = _model(name, seed=1, **kwargs)
    upstream.load_state_dict(state, strict=True)
    assert torch.equal(upstream.state_dict()[key], changed)
    load_checkpoint(upstream, state)  # and our strict loader takes it as the open_clip layout
    return upstream


@pytest.mark.slow
def test_full_size_openai_l14_336_image_dense_and_export():
    name = "ViT-L-14-336-quickgelu"
    model = _model(name)
    tower = vision_tower(model.visual)
    assert (tower.patch_size, tower.pretrained_grid, tower.num_blocks) == (14, (24, 24), 24)
    x = torch.randn(1, 3, 336, 336)
    with torch.no_grad():
        out = tower.forward(x, image=True)
        expected = model.encode_image(x)
    torch.testing.assert_close(out.image, expected, **CLOSE)
    assert out.dense.shape == (1, 768, 24, 24)
    _export_and_load_upstream(model, name)


@pytest.mark.slow
def test_full_size_siglip2_one_token_and_text():
    """SigLIP 2 B/16 with a 1x1 position grid (16-px images): the dense feature of the one token
    is upstream ``encode_image``; its text tower runs with a tokenizer stand-in given
    explicitly."""
    name = "ViT-B-16-SigLIP2"
    model = _model(name, force_image_size=16)
    tower = vision_tower(model.visual)
    assert isinstance(tower, SigLIPTower) and tower.output_dim == 768
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        dense = tower.forward(x, normalize=False).dense
        torch.testing.assert_close(dense.flatten(1), model.encode_image(x), **CLOSE)
    # CLIP's BPE at SigLIP's context length: ids below SigLIP's vocabulary
    stand_in = open_clip.get_tokenizer("ViT-B-16", context_length=64)
    embedder = TextEmbedder(model, name, cache_dir=None, tokenizer=stand_in)
    texts = ["a photo of a cat.", "sky"]
    with torch.no_grad():
        reference = model.encode_text(stand_in(texts))
    torch.testing.assert_close(embedder.encode_texts(texts), reference / reference.norm(dim=-1,
                               keepdim=True), **CLOSE)  # fmt: skip


@pytest.mark.slow
def test_full_size_siglip2_position_embeddings_at_512_and_export():
    name = "ViT-B-16-SigLIP2"
    model = _model(name)
    trunk = model.visual.trunk
    tower = vision_tower(model.visual)
    with torch.no_grad():
        x, grid, _ = tower.embed(torch.zeros(1, 3, 512, 512))
        conv = trunk.patch_embed.proj(torch.zeros(1, 3, 512, 512)).flatten(2).transpose(1, 2)
        pos = resample_abs_pos_embed(trunk.pos_embed, [32, 32], num_prefix_tokens=0)
    assert grid == (32, 32)
    torch.testing.assert_close(x, conv + pos)
    _export_and_load_upstream(model, name)


@pytest.mark.slow
def test_full_size_pe_core_head_one_token_image_and_export():
    """PE-Core B/16 pools its CLS and patch tokens, so an image always has two or more tokens: the
    one-token equality is checked on its real head; the image embedding on the whole model."""
    name = "PE-Core-B-16"
    model = _model(name)
    tower = vision_tower(model.visual)
    assert isinstance(tower, PETower) and tower.output_dim == 1024
    token = torch.randn(2, 1, 768)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(
            tower.project_tokens(token)[:, 0], _head_of_one_token(model.visual, token), **CLOSE
        )
        out = tower.forward(x, image=True)
        torch.testing.assert_close(out.image, model.encode_image(x), **CLOSE)
    assert out.dense.shape == (1, 1024, 14, 14)
    _export_and_load_upstream(model, name)


# -- the family configs ----------------------------------------------------------------------------
FAMILY_CONFIGS = [
    ROOT / "configs" / "coco" / f"{method}_{family}.yaml"
    for method in ("densevlm", "clipself")
    for family in ("openai_b16", "openai_l14_336", "siglip2_b16", "pe_core_b16")
]


def _released_pixels(name: str) -> tuple[list[float], list[float]]:
    """Mean and std (0-255) of the family's released weights, as open_clip records them."""
    name = densevlm_d2.clip.models.open_clip_name(name)
    cfg = open_clip.get_pretrained_cfg(name, open_clip.list_pretrained_tags_by_model(name)[0])
    return [255 * m for m in cfg["mean"]], [255 * s for s in cfg["std"]]


@pytest.mark.parametrize("path", FAMILY_CONFIGS, ids=lambda p: p.stem)
def test_family_config(path):
    """Each family's config: its student is supported, the canvas is a whole number of its
    patches, the trained blocks exist, and student and teacher normalise pixels as their released
    weights expect."""
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.merge_from_file(str(path))
    c = cfg.MODEL.CLIP
    assert c.MODEL_NAME in densevlm_d2.clip.models.available_models()
    assert cfg.INPUT.REGIONS.IMAGE_SIZE % densevlm_d2.clip.models.patch_size_of(c.MODEL_NAME) == 0
    with torch.device("meta"):
        depth = vision_tower(open_clip.create_model(c.MODEL_NAME, device="meta").visual).num_blocks
    assert c.FINETUNE == "blocks" and 0 < c.TRAINABLE_BLOCKS <= depth
    mean, std = _released_pixels(c.MODEL_NAME)
    torch.testing.assert_close(list(cfg.MODEL.PIXEL_MEAN), mean, atol=1e-4, rtol=0)
    torch.testing.assert_close(list(cfg.MODEL.PIXEL_STD), std, atol=1e-4, rtol=0)
    teacher = cfg.MODEL.DENSEVLM.TEACHER
    t_mean, t_std = _released_pixels(teacher.MODEL_NAME)
    if teacher.PIXEL_MEAN:
        torch.testing.assert_close(list(teacher.PIXEL_MEAN), t_mean, atol=1e-4, rtol=0)
        torch.testing.assert_close(list(teacher.PIXEL_STD), t_std, atol=1e-4, rtol=0)
    else:
        torch.testing.assert_close(mean, t_mean, atol=1e-4, rtol=0)
