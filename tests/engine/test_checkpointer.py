"""CLIPCheckpointer: raw CLIP files into a detectron2 model and detectron2 checkpoints, strictly."""

from __future__ import annotations

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

import densevlm_d2
from densevlm_d2.clip.checkpoint import CheckpointMismatchError, export_state_dict
from densevlm_d2.engine import CLIPCheckpointer


def _model():
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.META_ARCHITECTURE = "CLIPRegionClassifier"
    cfg.MODEL.BACKBONE.NAME = "CLIPViTBackbone"
    cfg.MODEL.CLIP.MODEL_NAME = "EVA02-Tiny-16"
    return build_model(cfg)


def test_raw_clip_checkpoints(tiny_eva, tmp_path):
    model = _model()
    for fmt in ("eva_clip", "open_clip"):
        path = tmp_path / f"{fmt}.pt"
        torch.save(
            {"state_dict": {"module." + k: v for k, v in export_state_dict(tiny_eva, fmt).items()}},
            path,
        )
        CLIPCheckpointer(model).load(str(path))
        for k, v in tiny_eva.state_dict().items():
            assert torch.equal(model.state_dict()["backbone.model." + k], v), (fmt, k)
    broken = export_state_dict(tiny_eva, "eva_clip")
    del broken["visual.blocks.0.mlp.w3.weight"]
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(CheckpointMismatchError, match="visual.trunk.blocks.0.mlp.fc2.weight"):
        CLIPCheckpointer(model).load(str(tmp_path / "broken.pt"))


def test_detectron2_checkpoints_round_trip_and_are_strict(tmp_path):
    model = _model()
    CLIPCheckpointer(model, str(tmp_path)).save("model_final")
    other = _model()
    CLIPCheckpointer(other).load(str(tmp_path / "model_final.pth"))
    for k, v in model.state_dict().items():
        assert torch.equal(other.state_dict()[k], v), k
    state = torch.load(tmp_path / "model_final.pth", weights_only=True)
    state["model"]["backbone.extra.weight"] = torch.zeros(1)
    del state["model"]["backbone.model.logit_scale"]
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointMismatchError) as e:
        CLIPCheckpointer(other).load(str(tmp_path / "bad.pth"))
    assert "backbone.model.logit_scale" in str(e.value) and "backbone.extra.weight" in str(e.value)
