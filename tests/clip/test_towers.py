"""Dense and image features against straightforward computations written from the raw weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import densevlm_d2
from densevlm_d2.clip.towers import EvaTower, OpenAIViTTower, eva_rope_table, vision_tower
from tests.conftest import published_rope


def _ln(x, sd, name, eps):
    return F.layer_norm(x, (x.shape[-1],), sd[name + ".weight"], sd[name + ".bias"], eps)


def _resized_pos(pe, grid):
    n = int(round((pe.shape[0] - 1) ** 0.5))
    if (n, n) == tuple(grid):
        return pe
    g = F.interpolate(pe[1:].T.reshape(1, -1, n, n), size=grid, mode="bicubic", align_corners=False)
    return torch.cat([pe[:1], g.reshape(pe.shape[1], -1).T])


def _attention(q, k, v):
    w = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    return w.softmax(-1) @ v


def eva_reference(model, x, heads: int):
    """EVA02-CLIP dense map and CLS embedding, written as the published model computes them."""
    sd = {
        k[len("visual.trunk.") :]: v
        for k, v in model.state_dict().items()
        if k.startswith("visual.trunk.")
    }
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    patch = sd["patch_embed.proj.weight"].shape[-1]
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=patch)
    b, c, gh, gw = t.shape
    t = torch.cat([sd["cls_token"].expand(b, 1, c), t.flatten(2).transpose(1, 2)], 1)
    t = t + _resized_pos(sd["pos_embed"][0], (gh, gw))
    cos, sin = published_rope((gh, gw), head_dim=c // heads)

    def rope(z):  # published rotate_half: consecutive pairs (z0, z1) -> (-z1, z0); CLS not rotated
        p = z[:, :, 1:]
        rot = torch.stack((-p[..., 1::2], p[..., 0::2]), -1).flatten(-2)
        return torch.cat([z[:, :, :1], p * cos + rot * sin], 2)

    def mlp(t, p):
        h = _ln(t, sd, p + "norm2", 1e-6)
        h = F.silu(F.linear(h, sd[p + "mlp.fc1_g.weight"], sd[p + "mlp.fc1_g.bias"])) * F.linear(
            h, sd[p + "mlp.fc1_x.weight"], sd[p + "mlp.fc1_x.bias"]
        )
        h = _ln(h, sd, p + "mlp.norm", 1e-6)
        return t + F.linear(h, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])

    def block(t, i, value_only):
        p = f"blocks.{i}."
        h = _ln(t, sd, p + "norm1", 1e-6)
        v = F.linear(h, sd[p + "attn.v_proj.weight"], sd[p + "attn.v_proj.bias"])
        if not value_only:
            n = t.shape[1]
            q = F.linear(h, sd[p + "attn.q_proj.weight"], sd[p + "attn.q_proj.bias"])
            k = F.linear(h, sd[p + "attn.k_proj.weight"])
            q, k, v = (z.reshape(b, n, heads, -1).transpose(1, 2) for z in (q, k, v))
            v = _attention(rope(q), rope(k), v).transpose(1, 2).reshape(b, n, c)
        a = F.linear(
            _ln(v, sd, p + "attn.norm", 1e-6), sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"]
        )
        return mlp(t + a, p)

    for i in range(depth - 1):
        t = block(t, i, False)
    dense = _ln(block(t, depth - 1, True)[:, 1:], sd, "norm", 1e-6)
    dense = F.normalize(F.linear(dense, sd["head.weight"], sd["head.bias"]), dim=-1)
    image = F.linear(
        _ln(block(t, depth - 1, False)[:, 0], sd, "norm", 1e-6), sd["head.weight"], sd["head.bias"]
    )
    return dense.transpose(1, 2).reshape(b, -1, gh, gw), image


def vit_reference(model, x, heads: int):
    """OpenAI-style ViT dense map (value path in the last block) and CLS embedding, written out."""
    sd = {k[len("visual.") :]: v for k, v in model.state_dict().items() if k.startswith("visual.")}
    depth = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("transformer.resblocks."))
    patch = sd["conv1.weight"].shape[-1]
    t = F.conv2d(x, sd["conv1.weight"], stride=patch)
    b, c, gh, gw = t.shape
    t = torch.cat([sd["class_embedding"].expand(b, 1, c), t.flatten(2).transpose(1, 2)], 1)
    t = _ln(t + _resized_pos(sd["positional_embedding"], (gh, gw)), sd, "ln_pre", 1e-5)

    def block(t, i, value_only):
        p = f"transformer.resblocks.{i}."
        h = _ln(t, sd, p + "ln_1", 1e-5)
        q, k, v = F.linear(h, sd[p + "attn.in_proj_weight"], sd[p + "attn.in_proj_bias"]).chunk(
            3, -1
        )
        if not value_only:
            n = t.shape[1]
            q, k, v = (z.reshape(b, n, heads, -1).transpose(1, 2) for z in (q, k, v))
            v = _attention(q, k, v).transpose(1, 2).reshape(b, n, c)
        t = t + F.linear(v, sd[p + "attn.out_proj.weight"], sd[p + "attn.out_proj.bias"])
        h = F.gelu(
            F.linear(
                _ln(t, sd, p + "ln_2", 1e-5), sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"]
            )
        )
        return t + F.linear(h, sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"])

    for i in range(depth - 1):
        t = block(t, i, False)
    dense = F.normalize(
        _ln(block(t, depth - 1, True)[:, 1:], sd, "ln_post", 1e-5) @ sd["proj"], dim=-1
    )
    image = _ln(block(t, depth - 1, False)[:, 0], sd, "ln_post", 1e-5) @ sd["proj"]
    return dense.transpose(1, 2).reshape(b, -1, gh, gw), image


def _min_cos(a, b, dim):
    return F.cosine_similarity(a, b, dim=dim).min().item()


@pytest.mark.parametrize("size", [(224, 224), (96, 160), (208, 64)])
@pytest.mark.parametrize("arch", ["eva", "vit"])
def test_dense_and_image_match_straightforward_computation(arch, size, tiny_eva, tiny_vit):
    model, ref = (tiny_eva, eva_reference) if arch == "eva" else (tiny_vit, vit_reference)
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = vision_tower(model.visual).forward(x, dense=True, image=True)
        dense_ref, image_ref = ref(model, x, heads=2)
    assert out.grid == (size[0] // 16, size[1] // 16)
    assert out.dense.shape == dense_ref.shape == (2, 64, size[0] // 16, size[1] // 16)
    assert torch.allclose(out.dense.norm(dim=1), torch.ones(1), atol=1e-5)
    assert _min_cos(out.dense, dense_ref, dim=1) >= 0.9999
    assert _min_cos(out.image, image_ref, dim=-1) >= 0.9999


@pytest.mark.parametrize("arch", ["eva", "vit"])
def test_image_at_native_size_equals_upstream_open_clip(arch, tiny_eva, tiny_vit):
    model = tiny_eva if arch == "eva" else tiny_vit
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        ours = vision_tower(model.visual).forward(x, dense=False, image=True).image
        assert torch.allclose(ours, model.encode_image(x), atol=1e-5, rtol=1e-5)


def test_rope_table_matches_timm_and_published_formula(tiny_eva):
    tower = vision_tower(tiny_eva.visual)
    assert isinstance(tower, EvaTower) and tower.pretrained_grid == (14, 14)
    timm_table = tiny_eva.visual.trunk.rope.get_embed()
    assert torch.allclose(tower.rope_table((14, 14), torch.device("cpu")), timm_table, atol=1e-6)
    for grid in [(32, 32), (6, 10)]:
        sin, cos = eva_rope_table(grid, 64).chunk(2, -1)
        ref_cos, ref_sin = published_rope(grid)
        assert torch.allclose(cos, ref_cos, atol=1e-5) and torch.allclose(sin, ref_sin, atol=1e-5)


def test_block_outputs_and_early_stop(tiny_vit):
    tower = vision_tower(tiny_vit.visual)
    assert isinstance(tower, OpenAIViTTower)
    calls = []
    for i, blk in enumerate(tiny_vit.visual.transformer.resblocks):
        blk.register_forward_pre_hook(lambda *_, i=i: calls.append(i))
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        out = tower.forward(x, dense=False, block_indices=[0])
        assert list(out.blocks) == [0] and out.dense is None and calls == [0]
        full = tower.forward(x, dense=True, block_indices=[0, 1])
    assert full.blocks[0].shape == (1, 128, 4, 6)
    # the last block's output is its value path: projecting it gives the dense map
    tokens = full.blocks[1].flatten(2).transpose(1, 2)
    projected = (
        F.normalize(tower.project_tokens(tokens), dim=-1).transpose(1, 2).reshape(1, 64, 4, 6)
    )
    assert torch.allclose(projected, full.dense, atol=1e-6)
    assert torch.equal(out.blocks[0], full.blocks[0])
    with pytest.raises(ValueError, match="block index 2 out of range"):
        tower.forward(x, block_indices=[2])


def test_input_not_multiple_of_patch_is_floored_as_published(tiny_eva):
    with torch.no_grad():
        out = vision_tower(tiny_eva.visual).forward(torch.randn(1, 3, 100, 70))
    assert out.dense.shape[-2:] == (6, 4)


@pytest.mark.slow
def test_full_size_eva_b16_dense_at_512(eva_b16):
    tower = vision_tower(eva_b16.visual)
    assert (tower.patch_size, tower.width, tower.output_dim, tower.num_blocks) == (16, 768, 512, 12)
    with torch.no_grad():
        out = tower.forward(
            torch.randn(1, 3, 512, 512), dense=True, image=True, block_indices=[3, 5, 7, 11]
        )
    assert out.dense.shape == (1, 512, 32, 32) and out.image.shape == (1, 512)
    assert {i: tuple(t.shape) for i, t in out.blocks.items()} == {
        i: (1, 768, 32, 32) for i in (3, 5, 7, 11)
    }


def test_unsupported_models():
    with pytest.raises(ValueError, match="unsupported CLIP model 'RN50'.*EVA02-CLIP-B-16"):
        densevlm_d2.build_clip_model("RN50")
    with pytest.raises(TypeError, match="no dense-feature support"):
        vision_tower(torch.nn.Linear(2, 2))


def _published_rope_float32(grid, head_dim=64, pt_seq_len=16, theta=10000.0):
    """The published VisionRotaryEmbeddingFast computation in float32, step by step (square grids
    only there; per axis here): t = arange(n) / n * pt_seq_len, freqs = theta ** -(2i / d),
    outer product, each frequency repeated twice, rows then columns."""
    d = head_dim // 2
    freqs = 1.0 / (theta ** (torch.arange(0, d, 2)[: d // 2].float() / d))
    per_axis = [
        torch.einsum("i,f->if", torch.arange(n) / n * pt_seq_len, freqs).repeat_interleave(2, -1)
        for n in grid
    ]
    h, w = grid
    angles = torch.cat(
        [per_axis[0][:, None].expand(h, w, d), per_axis[1][None, :].expand(h, w, d)], -1
    ).reshape(h * w, head_dim)
    return angles.cos(), angles.sin()


def test_timm_rope_builder_is_bit_identical_to_the_published_formula():
    """eva_rope_table is timm's build_rotary_pos_embed; it equals the published float32 computation
    exactly at every grid up to 40 x 40 (square and not) and for other head sizes."""
    for head_dim in (64, 32, 80):
        for h in range(1, 41):
            for w in sorted({1, 7, 16, 24, 32, 36, h}):
                sin, cos = eva_rope_table((h, w), head_dim).chunk(2, -1)
                ref_cos, ref_sin = _published_rope_float32((h, w), head_dim)
                assert torch.equal(cos, ref_cos) and torch.equal(sin, ref_sin), (head_dim, h, w)
