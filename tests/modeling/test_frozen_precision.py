"""Frozen CLIPs in half precision (MODEL.DENSEVLM.TEACHER.PRECISION, MODEL.FVIT.FROZEN_PRECISION):
the results are those of the published AMP run of the float32 model, bit for bit; outputs, state
dicts, checkpoints and exports stay float32."""

from __future__ import annotations

import pytest
import torch
from detectron2.modeling import build_model

import densevlm_d2
from densevlm_d2.clip.checkpoint import load_checkpoint
from densevlm_d2.engine.checkpointer import CLIPCheckpointer
from densevlm_d2.modeling import CLIPViTBackbone
from tests.modeling.test_grad_checkpointing import _fvit_cfg, _region_batch, _region_cfg

HALF = ["float16", "bfloat16"]


def _pair(name: str, precision: str, seed: int = 0):
    """The same random CLIP as a float32 backbone and as a frozen one stored in ``precision``."""
    torch.manual_seed(seed)
    model = densevlm_d2.build_clip_model(name)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    twin = densevlm_d2.build_clip_model(name)
    twin.load_state_dict(state)
    full = CLIPViTBackbone(model_name=name, model=model)
    half = CLIPViTBackbone(model_name=name, model=twin, precision=precision)
    return full, half


@pytest.mark.parametrize("name", ["EVA02-Tiny-16", "ViT-Tiny-16"])
@pytest.mark.parametrize("precision", HALF)
def test_half_tower_computes_as_amp_does(name, precision):
    full, half = _pair(name, precision)
    dtype = getattr(torch, precision)
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        reference = full.features(x, image=True, blocks=[0])
        with torch.autocast("cpu", dtype=dtype):
            amp = full.features(x, image=True, blocks=[0])
        out = half.features(x, image=True, blocks=[0])
    for got, want, ref in (
        (out.dense, amp.dense, reference.dense),
        (out.image, amp.image, reference.image),
        (out.blocks[0], amp.blocks[0], reference.blocks[0]),
    ):
        assert got.dtype == torch.float32
        assert torch.equal(got, want.float())  # exactly the AMP result
        assert 0 < (got - ref).abs().max() < 0.05  # which differs from float32 a little
    weights = half.model.visual.trunk.blocks[0].attn.proj.weight if "EVA" in name else None
    if weights is not None:
        assert weights.dtype == dtype and not weights.requires_grad
    visual_bytes = [
        sum(p.numel() * p.element_size() for p in b.model.visual.parameters()) for b in (full, half)
    ]
    assert visual_bytes[1] < 0.8 * visual_bytes[0]


def test_half_clip_state_dict_and_export_are_float32(tmp_path):
    full, half = _pair("EVA02-Tiny-16", "float16")
    state = half.state_dict()
    assert list(state) == list(full.state_dict())
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float32}
    path = half.save(tmp_path / "half.pt", "open_clip")
    plain = densevlm_d2.build_clip_model("EVA02-Tiny-16")
    load_checkpoint(plain, path)  # strict
    assert plain.visual.trunk.blocks[0].attn.proj.weight.dtype == torch.float32
    # loading float32 weights into the half tower rounds them as it was rounded
    again = CLIPViTBackbone(model_name="EVA02-Tiny-16", checkpoint=path, precision="float16")
    for a, b in zip(again.model.parameters(), half.model.parameters(), strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_only_a_frozen_clip_is_half_and_names_are_checked():
    with pytest.raises(ValueError, match="only a frozen CLIP can be stored in bfloat16"):
        CLIPViTBackbone(
            model_name="EVA02-Tiny-16",
            random_init=True,
            finetune="blocks",
            trainable_blocks=1,
            precision="bfloat16",
        )
    half = CLIPViTBackbone(model_name="EVA02-Tiny-16", random_init=True, precision="float16")
    with pytest.raises(ValueError, match="stored in float16 is frozen"):
        half.set_trainable("full")
    cfg = _region_cfg("DenseVLM", False)
    cfg.MODEL.DENSEVLM.TEACHER.PRECISION = "half"
    with pytest.raises(ValueError, match=r"MODEL.DENSEVLM.TEACHER.PRECISION must be one of"):
        build_model(cfg)
    cfg = _fvit_cfg(False)
    cfg.MODEL.FVIT.FROZEN_PRECISION = "fp16"
    with pytest.raises(ValueError, match=r"MODEL.FVIT.FROZEN_PRECISION must be one of"):
        build_model(cfg)


def test_densevlm_half_teacher_gives_the_amp_teacher_loss():
    from detectron2.utils.events import EventStorage

    batch = _region_batch(crops=False)
    models = {}
    for precision in ("float32", "float16"):
        cfg = _region_cfg("DenseVLM", False)
        cfg.MODEL.DENSEVLM.TEACHER.PRECISION = precision
        torch.manual_seed(0)
        models[precision] = build_model(cfg).train()
    full, half = models["float32"], models["float16"]
    assert half.teacher.model.visual.trunk.blocks[0].attn.proj.weight.dtype == torch.float16
    images = torch.stack([x["image"] for x in batch])
    boxes = [x["boxes"] for x in batch]
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.float16):
            amp = full.teacher_features(images, boxes)
        got = half.teacher_features(images, boxes)
    assert got.dtype == torch.float32 and torch.equal(got, amp.float())
    with EventStorage(0):
        losses = [sum(m(batch).values()) for m in (full, half)]  # loss_kl_thing + loss_kl_stuff
    assert torch.isfinite(losses[1]) and losses[1] != losses[0]
    # the teacher is no part of a checkpoint: the student's state dict is the float32 model's
    assert half.state_dict().keys() == full.state_dict().keys()


@pytest.mark.slow
def test_fvit_half_frozen_clip_checkpoints_are_float32(tmp_path):
    cfg = _fvit_cfg(False)
    cfg.MODEL.FVIT.FROZEN_PRECISION = "bfloat16"
    torch.manual_seed(0)
    model = build_model(cfg)
    clip = model.backbone.bottom_up.clip_backbone
    assert clip.model.visual.trunk.blocks[0].attn.proj.weight.dtype == torch.bfloat16
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        feats = model.backbone(x)
    assert {v.dtype for v in feats.values()} == {torch.float32}
    CLIPCheckpointer(model, str(tmp_path)).save("model_final")
    saved = torch.load(tmp_path / "model_final.pth", weights_only=False)["model"]
    assert {v.dtype for v in saved.values() if v.is_floating_point()} == {torch.float32}
    plain = build_model(_fvit_cfg(False))
    CLIPCheckpointer(plain).load(str(tmp_path / "model_final.pth"))  # strict
    resumed = build_model(cfg)
    CLIPCheckpointer(resumed).load(str(tmp_path / "model_final.pth"))
    for a, b in zip(resumed.parameters(), model.parameters(), strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)
