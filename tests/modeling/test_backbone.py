"""The CLIP ViT backbone through detectron2's registry and config, alone and inside a stock
meta-architecture."""

from __future__ import annotations

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_backbone, build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

import densevlm_d2
from densevlm_d2.clip.towers import vision_tower


def _cfg(model_name="EVA02-Tiny-16", out_features=("dense",), **clip):
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = "CLIPViTBackbone"
    cfg.MODEL.CLIP.MODEL_NAME = model_name
    cfg.MODEL.CLIP.OUT_FEATURES = list(out_features)
    for k, v in clip.items():
        setattr(cfg.MODEL.CLIP, k.upper(), v)
    return cfg


def test_config_keys_are_added_once():
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    assert cfg.MODEL.CLIP.MODEL_NAME == "EVA02-CLIP-B-16" and cfg.INPUT.REGIONS.IMAGE_SIZE == 512
    cfg.INPUT.REGIONS.IMAGE_SIZE = 640
    assert densevlm_d2.add_densevlm_config(cfg).INPUT.REGIONS.IMAGE_SIZE == 640


def test_build_output_shape_and_features(tiny_eva, tmp_path):
    path = densevlm_d2.save_checkpoint(tiny_eva, tmp_path / "tiny_eva.pt", "eva_clip")
    cfg = _cfg(out_features=("block0", "block1", "dense"), checkpoint=str(path))
    backbone = build_backbone(cfg)
    shapes = backbone.output_shape()
    assert {k: (s.channels, s.stride) for k, s in shapes.items()} == {
        "block0": (128, 16),
        "block1": (128, 16),
        "dense": (64, 16),
    }
    assert backbone.size_divisibility == 16
    for k, v in tiny_eva.state_dict().items():  # the checkpoint was loaded
        assert torch.equal(backbone.model.state_dict()[k], v), k
    x = torch.randn(2, 3, 64, 96)
    feats = backbone(x)
    assert list(feats) == ["block0", "block1", "dense"]
    with torch.no_grad():
        ref = vision_tower(tiny_eva.visual).forward(x, dense=True, block_indices=[0, 1])
    assert torch.allclose(feats["dense"], ref.dense, atol=1e-6)
    assert torch.allclose(feats["block0"], ref.blocks[0], atol=1e-6)
    assert feats["block1"].shape == (2, 128, 4, 6)


def test_frozen_and_trainable_blocks():
    frozen = build_backbone(_cfg("ViT-Tiny-16"))
    assert not any(p.requires_grad for p in frozen.parameters())
    frozen.train()
    assert not frozen.model.training  # frozen CLIP stays in eval mode
    assert frozen(torch.randn(1, 3, 32, 32))["dense"].grad_fn is None

    b = build_backbone(_cfg("ViT-Tiny-16", finetune="blocks", trainable_blocks=1))
    trainable = {n for n, p in b.named_parameters() if p.requires_grad}
    assert trainable and all(
        n.startswith("model.visual.transformer.resblocks.1.") for n in trainable
    )
    b.train()
    assert (
        b.model.visual.training and not b.model.transformer.training
    )  # the text tower stays in eval mode
    out = b(torch.randn(1, 3, 32, 32))["dense"]
    out.sum().backward()
    assert b.model.visual.transformer.resblocks[1].mlp.c_fc.weight.grad is not None
    assert b.model.visual.conv1.weight.grad is None

    with pytest.raises(ValueError, match=r"must be in \[1, 2\], got 3"):
        build_backbone(_cfg("ViT-Tiny-16", finetune="blocks", trainable_blocks=3))
    with pytest.raises(ValueError, match="unknown CLIP backbone output 'res4'"):
        build_backbone(_cfg("ViT-Tiny-16", out_features=("res4",)))


def test_grad_checkpointing_gives_the_same_gradients(tiny_eva, tmp_path):
    path = densevlm_d2.save_checkpoint(tiny_eva, tmp_path / "t.pt", "open_clip")
    grads = []
    for ckpt in (False, True):
        b = build_backbone(
            _cfg(
                finetune="blocks", trainable_blocks=2, grad_checkpointing=ckpt, checkpoint=str(path)
            )
        )
        b(torch.ones(1, 3, 48, 48))["dense"].square().sum().backward()
        grads.append(b.model.visual.trunk.blocks[0].attn.q_proj.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_inside_stock_generalized_rcnn():
    """A stock detectron2 Faster R-CNN built from a config, on the CLIP backbone's block output."""
    cfg = _cfg(out_features=("block1",))
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    cfg.MODEL.PIXEL_MEAN = [122.7709383, 116.7460125, 104.09373615]
    cfg.MODEL.PIXEL_STD = [68.5005327, 66.6321579, 70.3231630]
    cfg.MODEL.RPN.IN_FEATURES = ["block1"]
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[16, 32, 64]]
    cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["block1"]
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 16
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 1
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 32
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 4
    model = build_model(cfg)
    assert model.backbone.size_divisibility == 16
    image = torch.randint(0, 255, (3, 70, 100), dtype=torch.uint8)
    inst = Instances(
        (70, 100),
        gt_boxes=Boxes(torch.tensor([[10.0, 10.0, 50.0, 60.0]])),
        gt_classes=torch.tensor([1]),
    )
    model.train()
    with EventStorage():
        losses = model([{"image": image, "instances": inst}])
    assert {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"} <= set(losses)
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        out = model([{"image": image, "height": 70, "width": 100}])
    assert isinstance(out[0]["instances"], Instances)


def test_base_config_file():
    from pathlib import Path

    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.merge_from_file(str(Path(__file__).resolve().parents[2] / "configs" / "Base-CLIP-ViT.yaml"))
    assert cfg.MODEL.BACKBONE.NAME == "CLIPViTBackbone" and cfg.INPUT.FORMAT == "RGB"
    cfg.MODEL.CLIP.MODEL_NAME = "ViT-Tiny-16"
    assert build_backbone(cfg).output_shape()["dense"].stride == 16
