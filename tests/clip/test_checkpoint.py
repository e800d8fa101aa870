"""Checkpoint layouts: strict loading, every error, export and round trips (files written by the
tests)."""

from __future__ import annotations

import pytest
import torch
from timm.models.eva import checkpoint_filter_fn

import demo.register  # noqa: F401  (the demo's EVA02-Demo-16)
import densevlm_d2
from densevlm_d2.clip.checkpoint import (
    CheckpointFormat,
    CheckpointMismatchError,
    atomic_save,
    detect_format,
    eva_to_open_clip,
    export_state_dict,
    load_checkpoint,
    read_state_dict,
)
from tests.conftest import published_rope, random_release_state, release_key_shapes

# EVA-CLIP name -> open_clip (timm) name for one block, written out by hand from the two layouts.
BLOCK_MAP = {
    "norm1.weight": "norm1.weight",
    "attn.q_bias": "attn.q_proj.bias",
    "attn.v_bias": "attn.v_proj.bias",
    "attn.q_proj.weight": "attn.q_proj.weight",
    "attn.k_proj.weight": "attn.k_proj.weight",
    "attn.v_proj.weight": "attn.v_proj.weight",
    "attn.inner_attn_ln.weight": "attn.norm.weight",
    "attn.proj.weight": "attn.proj.weight",
    "norm2.bias": "norm2.bias",
    "mlp.w1.weight": "mlp.fc1_g.weight",
    "mlp.w2.bias": "mlp.fc1_x.bias",
    "mlp.ffn_ln.weight": "mlp.norm.weight",
    "mlp.w3.weight": "mlp.fc2.weight",
}


def _assert_same_state(a: dict, b: dict):
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


# --------------------------------------------------------------------------------------------------
# EVA-CLIP release layout, full size
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_release_layout_loads_every_tensor(eva_b16_release_state, tmp_path):
    path = tmp_path / "EVA02_CLIP_B_psz16_s8B.pt"
    torch.save(eva_b16_release_state, path)
    model = densevlm_d2.build_clip_model("EVA02-CLIP-B-16")
    assert load_checkpoint(model, path) is CheckpointFormat.EVA_CLIP
    src, dst = eva_b16_release_state, model.state_dict()
    for blk in (0, 11):
        for eva_key, timm_key in BLOCK_MAP.items():
            assert torch.equal(
                dst[f"visual.trunk.blocks.{blk}.{timm_key}"], src[f"visual.blocks.{blk}.{eva_key}"]
            )
    for eva_key in (
        "cls_token",
        "pos_embed",
        "patch_embed.proj.weight",
        "norm.bias",
        "head.weight",
        "head.bias",
    ):
        assert torch.equal(dst[f"visual.trunk.{eva_key}"], src[f"visual.{eva_key}"])
    assert torch.equal(dst["logit_scale"], src["logit_scale"])
    assert torch.equal(
        dst["text.transformer.resblocks.3.attn.in_proj_weight"],
        src["text.transformer.resblocks.3.attn.in_proj_weight"],
    )
    # every model tensor came from the file: all 410 non-RoPE release tensors map one-to-one onto
    # the model
    non_rope = [k for k in src if "rope" not in k]
    assert len(non_rope) == len(dst)
    file_values = sorted(float(v.double().sum()) for k, v in src.items() if "rope" not in k)
    model_values = sorted(float(v.double().sum()) for v in dst.values())
    assert file_values == model_values


def test_release_mapping_agrees_with_timm(eva_b16_release_state, eva_b16):
    ours = eva_to_open_clip(eva_b16_release_state, eva_b16)
    timm_visual = checkpoint_filter_fn(eva_b16_release_state, eva_b16.visual.trunk)
    ours_visual = {
        k[len("visual.trunk.") :]: v for k, v in ours.items() if k.startswith("visual.trunk.")
    }
    assert set(ours_visual) == set(timm_visual)
    for k, v in timm_visual.items():
        assert torch.equal(ours_visual[k], v), k


@pytest.mark.slow
def test_fine_tuned_release_wrapped_and_prefixed(eva_b16_release_state, tmp_path):
    """DenseVLM/CLIPSelf save {'epoch', 'name', 'state_dict', 'optimizer', 'scaler'}, keys with
    'module.'."""
    wrapped = {
        "epoch": 6,
        "name": "densevlm_coco_6_save6_512_eva_vib16_12layers",
        "state_dict": {"module." + k: v for k, v in eva_b16_release_state.items()},
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5, "params": [0]}]},
        "scaler": {"scale": 65536.0},
    }
    path = tmp_path / "densevlm_coco_6_save6_512_eva_vib16_12layers.pt"
    torch.save(wrapped, path)
    model = densevlm_d2.build_clip_model("EVA02-CLIP-B-16")
    assert load_checkpoint(model, path) is CheckpointFormat.EVA_CLIP
    assert torch.equal(
        model.state_dict()["visual.trunk.blocks.5.attn.q_proj.bias"],
        eva_b16_release_state["visual.blocks.5.attn.q_bias"],
    )


@pytest.mark.slow
def test_fp16_release_loads(tmp_path):
    state = random_release_state("EVA02-CLIP-B-16", seed=3, dtype=torch.float16)
    model = densevlm_d2.build_clip_model("EVA02-CLIP-B-16")
    load_checkpoint(model, state)
    assert torch.equal(
        model.state_dict()["visual.trunk.head.weight"], state["visual.head.weight"].float()
    )


@pytest.mark.slow
def test_export_release_layout_keys_and_shapes(eva_b16_release_state, eva_b16):
    load_checkpoint(eva_b16, eva_b16_release_state)
    exported = export_state_dict(eva_b16, "eva_clip")
    expected = release_key_shapes("EVA02-CLIP-B-16")
    assert {k: tuple(v.shape) for k, v in exported.items()} == expected
    for k, v in eva_b16_release_state.items():
        if (
            "rope" in k
        ):  # recomputed in float32 as published; the test's values are computed in float64
            assert torch.allclose(exported[k], v, atol=1e-5), k
        else:
            assert torch.equal(exported[k], v), k


@pytest.mark.slow
def test_export_release_layout_large_model():
    model = densevlm_d2.build_clip_model("EVA02-CLIP-L-14-336")
    exported = export_state_dict(model, "eva_clip")
    assert {k: tuple(v.shape) for k, v in exported.items()} == release_key_shapes(
        "EVA02-CLIP-L-14-336"
    )
    cos, sin = published_rope(24)
    assert torch.allclose(exported["visual.rope.freqs_cos"], cos, atol=1e-5)
    assert torch.allclose(exported["visual.blocks.23.attn.rope.freqs_sin"], sin, atol=1e-5)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    load_checkpoint(model, exported)  # strict: the export holds every tensor the model needs
    assert torch.equal(
        model.visual.trunk.blocks[7].mlp.fc1_g.weight, exported["visual.blocks.7.mlp.w1.weight"]
    )


# --------------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["eva_clip", "open_clip"])
def test_round_trip_is_bit_exact_full_size(eva_b16_release_state, fmt, tmp_path):
    a = densevlm_d2.build_clip_model("EVA02-CLIP-B-16")
    load_checkpoint(a, eva_b16_release_state)
    path = densevlm_d2.save_checkpoint(a, tmp_path / f"b16_{fmt}.pt", fmt)
    reread = read_state_dict(path)
    assert detect_format(reread).value == fmt
    b = densevlm_d2.build_clip_model("EVA02-CLIP-B-16")
    load_checkpoint(b, path)
    _assert_same_state(a.state_dict(), b.state_dict())


@pytest.mark.parametrize(
    "name,fmt",
    [("EVA02-Tiny-16", "eva_clip"), ("EVA02-Tiny-16", "open_clip"), ("ViT-Tiny-16", "open_clip")],
)
def test_round_trip_tiny(name, fmt, tmp_path, request):
    a = request.getfixturevalue("tiny_eva" if "EVA" in name else "tiny_vit")
    path = densevlm_d2.save_checkpoint(a, tmp_path / "tiny.pt", fmt)
    b = densevlm_d2.build_clip_model(name)
    assert load_checkpoint(b, path).value == fmt
    _assert_same_state(a.state_dict(), b.state_dict())
    # exporting the reloaded model gives the same file content
    _assert_same_state(export_state_dict(a, fmt), export_state_dict(b, fmt))


def test_fp16_export_then_load(tiny_eva, tmp_path):
    path = densevlm_d2.save_checkpoint(
        tiny_eva, tmp_path / "half.pt", "eva_clip", dtype=torch.float16
    )
    state = read_state_dict(path)
    assert all(v.dtype == torch.float16 for v in state.values())
    b = densevlm_d2.build_clip_model("EVA02-Tiny-16")
    load_checkpoint(b, path)
    assert torch.equal(
        b.state_dict()["visual.trunk.pos_embed"],
        tiny_eva.state_dict()["visual.trunk.pos_embed"].half().float(),
    )


def test_open_clip_safetensors(tiny_vit, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_vit.state_dict().items()}, str(path))
    b = densevlm_d2.build_clip_model("ViT-Tiny-16")
    assert load_checkpoint(b, path) is CheckpointFormat.OPEN_CLIP
    _assert_same_state(tiny_vit.state_dict(), b.state_dict())


def test_openai_state_dict_config_entries_are_ignored(tiny_vit):
    state = dict(tiny_vit.state_dict())
    state.update(
        input_resolution=torch.tensor(224),
        context_length=torch.tensor(77),
        vocab_size=torch.tensor(49408),
    )
    b = densevlm_d2.build_clip_model("ViT-Tiny-16")
    assert load_checkpoint(b, state) is CheckpointFormat.OPEN_CLIP
    _assert_same_state(tiny_vit.state_dict(), b.state_dict())


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------
def _eva_tiny_state(tiny_eva):
    return export_state_dict(tiny_eva, "eva_clip")


def test_missing_key_is_named(tiny_eva):
    state = _eva_tiny_state(tiny_eva)
    del state["visual.blocks.1.mlp.w2.weight"], state["text.ln_final.bias"]
    with pytest.raises(CheckpointMismatchError) as e:
        load_checkpoint(densevlm_d2.build_clip_model("EVA02-Tiny-16"), state)
    msg = str(e.value)
    assert "2 missing key(s)" in msg
    assert "visual.trunk.blocks.1.mlp.fc1_x.weight" in msg and "text.ln_final.bias" in msg
    assert set(e.value.missing) == {"visual.trunk.blocks.1.mlp.fc1_x.weight", "text.ln_final.bias"}


def test_unexpected_key_is_named(tiny_eva):
    state = _eva_tiny_state(tiny_eva)
    state["visual.blocks.0.attn.relative_position_bias_table"] = torch.zeros(3, 2)
    with pytest.raises(
        CheckpointMismatchError, match="1 unexpected key.*relative_position_bias_table"
    ):
        load_checkpoint(densevlm_d2.build_clip_model("EVA02-Tiny-16"), state)


def test_shape_mismatch_is_named(tiny_eva):
    state = _eva_tiny_state(tiny_eva)
    state["visual.head.weight"] = torch.zeros(32, 128)
    with pytest.raises(CheckpointMismatchError) as e:
        load_checkpoint(densevlm_d2.build_clip_model("EVA02-Tiny-16"), state)
    assert "visual.trunk.head.weight (file (32, 128) vs model (64, 128))" in str(e.value)


def test_wrong_architecture_is_an_error(eva_b16_release_state, tiny_eva):
    """The error names the depths and widths that differ, not the first keys or buffers."""
    with pytest.raises(
        CheckpointMismatchError,
        match=r"another architecture: vision blocks 12 \(model 2\), text blocks 12 \(model 2\), "
        r"vision width 768 \(model 128\)",
    ):
        load_checkpoint(densevlm_d2.build_clip_model("EVA02-Tiny-16"), eva_b16_release_state)
    # a tiny EVA file into the demo's EVA02 (other grid and head size): not a RoPE difference
    with pytest.raises(CheckpointMismatchError) as e:
        load_checkpoint(densevlm_d2.build_clip_model("EVA02-Demo-16"), _eva_tiny_state(tiny_eva))
    assert "vision blocks 2 (model 4)" in str(e.value) and "RoPE" not in str(e.value)
    with pytest.raises(CheckpointMismatchError, match="non-EVA model"):
        load_checkpoint(densevlm_d2.build_clip_model("ViT-Tiny-16"), eva_b16_release_state)


def test_wrong_rope_buffers_are_an_error(tiny_eva):
    state = _eva_tiny_state(tiny_eva)
    state["visual.blocks.1.attn.rope.freqs_sin"] = (
        state["visual.blocks.1.attn.rope.freqs_sin"] + 0.01
    )
    with pytest.raises(
        CheckpointMismatchError, match="RoPE buffers differ.*blocks.1.attn.rope.freqs_sin"
    ):
        load_checkpoint(densevlm_d2.build_clip_model("EVA02-Tiny-16"), state)


def test_rope_buffers_are_optional(tiny_eva):
    state = {k: v for k, v in _eva_tiny_state(tiny_eva).items() if "rope" not in k}
    b = densevlm_d2.build_clip_model("EVA02-Tiny-16")
    load_checkpoint(b, state)
    _assert_same_state(tiny_eva.state_dict(), b.state_dict())


def test_unrecognised_layout(tmp_path):
    torch.save({"backbone.conv1.weight": torch.zeros(1)}, tmp_path / "x.pt")
    with pytest.raises(
        ValueError, match="unrecognised CLIP checkpoint layout.*backbone.conv1.weight"
    ):
        load_checkpoint(densevlm_d2.build_clip_model("ViT-Tiny-16"), tmp_path / "x.pt")


def test_missing_file_and_non_tensors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        read_state_dict(tmp_path / "nowhere.pt")
    with pytest.raises(ValueError, match="not tensors: visual.note"):
        read_state_dict({"visual.conv1.weight": torch.zeros(1), "visual.note": 3})
    with pytest.raises(ValueError, match="holds no state dict"):
        read_state_dict({})


class _Payload:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_files_are_read_weights_only(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"visual.conv1.weight": torch.zeros(1)}, "extra": _Payload()}, path)
    with pytest.raises(Exception, match="[Ww]eights only load failed|weights_only"):
        read_state_dict(path)


def test_atomic_save_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "ckpt.pt"
    atomic_save({"a": torch.ones(2)}, target)
    before = target.read_bytes()
    with pytest.raises(Exception):
        atomic_save({"a": lambda: 0}, target)  # lambdas cannot be pickled
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


@pytest.mark.slow
def test_openai_weights_need_the_quickgelu_variant():
    """OpenAI's ViT-B/16 weights were trained with QuickGELU: ViT-B-16-quickgelu has the same keys
    as ViT-B-16 (a file loads into either) and QuickGELU activations."""
    from open_clip.transformer import QuickGELU

    quick = densevlm_d2.build_clip_model("ViT-B-16-quickgelu")
    assert isinstance(quick.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
    gelu = densevlm_d2.build_clip_model("ViT-B-16")
    assert not isinstance(gelu.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
    load_checkpoint(quick, export_state_dict(gelu, "open_clip"))


def test_exports_load_in_upstream_open_clip(tiny_eva, tmp_path):
    """docs/model_zoo.md: open_clip-layout exports load in open_clip.create_model(pretrained=)."""
    import open_clip

    path = densevlm_d2.save_checkpoint(tiny_eva, tmp_path / "tiny_open_clip.pt", "open_clip")
    model = open_clip.create_model("EVA02-Tiny-16", pretrained=str(path))
    for k, v in tiny_eva.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
