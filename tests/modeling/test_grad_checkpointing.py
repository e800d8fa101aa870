"""Activation checkpointing changes memory, never results: for every method the loss and every
parameter's gradient with checkpointing on equal the plain run (float32), batch-norm statistics
too, and autograd keeps fewer bytes for the backward pass."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

import demo.register  # noqa: F401  (the demo's model EVA02-Demo-16)
import densevlm_d2
from densevlm_d2 import Vocabulary
from densevlm_d2.data import register_vocabulary
from densevlm_d2.utils.activation_checkpointing import (
    SavedActivations,
    checkpointed,
    recompute_in_backward,
)
from tests.cat_seg.test_model import _aggregator, _inputs
from tests.cat_seg.test_model import tiny_cfg as cat_seg_cfg

ROOT = Path(__file__).resolve().parents[2]
VOCABULARY = "test_ckpt_vocabulary"


@pytest.fixture(autouse=True)
def _event_storage():
    with EventStorage(0):  # the methods and detectron2's heads log training statistics
        yield


def _set(cfg, overrides: dict):
    for key, value in overrides.items():
        node = cfg
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        node[last] = value
    return cfg


def _run(build, step, ckpt: bool):
    """(loss, {name: gradient}, saved bytes, model) of one training step of a model built with
    checkpointing ``ckpt``; the same initialisation and sampling in every run."""
    torch.manual_seed(0)
    model = build(ckpt).train()
    torch.manual_seed(1)
    with SavedActivations(model.parameters()) as saved:
        loss = step(model)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, saved.bytes, model


def _assert_same(plain, ckpt, min_grads: int):
    assert torch.equal(plain[0], ckpt[0]), (plain[0], ckpt[0])
    assert plain[1].keys() == ckpt[1].keys() and len(plain[1]) >= min_grads
    for name, g in plain[1].items():
        diff = (ckpt[1][name] - g).norm().item()
        assert diff <= 1e-6 * g.norm().item(), (name, diff)
    assert ckpt[2] < plain[2], (ckpt[2], plain[2])  # fewer bytes kept for the backward pass


# -- the helpers ---------------------------------------------------------------------------------
def test_checkpointed_keeps_batch_norm_statistics_and_saves_memory():
    def build():
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU()
        ).train()

    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    results = []
    for ckpt in (False, True):
        net = build()
        with SavedActivations(net.parameters()) as saved:
            out = checkpointed(net, x, module=net, enabled=ckpt)
        out.square().sum().backward()
        results.append((out.detach(), x.grad.clone(), net[1].running_var.clone(), saved.bytes))
        x.grad = None
    (out0, g0, var0, b0), (out1, g1, var1, b1) = results
    assert torch.equal(out0, out1) and torch.equal(g0, g1)
    assert torch.equal(var0, var1)  # the recomputation did not update the statistics again
    assert b1 < b0 / 2  # only the input is kept


def test_recompute_in_backward_keeps_names_and_survives_a_deep_copy():
    import copy

    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.GELU(), torch.nn.Linear(4, 1))
    keys = list(net.state_dict())
    recompute_in_backward(net)
    assert list(net.state_dict()) == keys
    twin = copy.deepcopy(net)
    x = torch.randn(3, 4, requires_grad=True)
    with SavedActivations(twin.parameters()) as saved:
        twin(x).sum().backward()
    assert saved.bytes == x.numel() * 4  # the copy checkpoints itself: only its input is kept
    assert twin[0].weight.grad is not None and net[0].weight.grad is None


# -- DenseVLM and CLIPSelf: the CLIP's blocks (MODEL.CLIP.GRAD_CHECKPOINTING) --------------------
def _region_cfg(arch: str, ckpt: bool):
    register_vocabulary(
        VOCABULARY,
        Vocabulary.from_names(["cat", "dog", "sky", "grass"], is_thing=[True, True, False, False]),
    )
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.merge_from_file(str(ROOT / "configs" / "coco" / "tiny_densevlm_cpu.yaml"))
    return _set(
        cfg,
        {
            "MODEL.META_ARCHITECTURE": arch,
            "MODEL.CLIP.RANDOM_INIT": True,
            "MODEL.CLIP.TEXT_CACHE.ENABLED": False,
            "MODEL.CLIP.GRAD_CHECKPOINTING": ckpt,
            "MODEL.DENSEVLM.VOCABULARY": VOCABULARY,
            "MODEL.DENSEVLM.THRESHOLD": 0.0,
            "DATASETS.TEST": (),
        },
    )


def _region_batch(crops: bool):
    g = torch.Generator().manual_seed(3)
    boxes = torch.tensor([[0.0, 0, 32, 32], [16, 8, 64, 40], [0, 32, 48, 64]])
    batch = []
    for _ in range(2):
        item = {
            "image": torch.randint(0, 256, (3, 64, 64), generator=g, dtype=torch.uint8),
            "boxes": boxes,
        }
        if crops:
            item["crops"] = torch.randn(3, 3, 32, 32, generator=g)
        batch.append(item)
    return batch


def test_clip_checkpoints_the_first_trainable_block_too():
    """The first trainable block's input has no gradient (the patch embedding is frozen): it is
    checkpointed all the same, so only block inputs and the projection's are kept."""
    from densevlm_d2.modeling import CLIPViTBackbone

    b = CLIPViTBackbone(
        model_name="EVA02-Tiny-16",
        random_init=True,
        finetune="blocks",
        trainable_blocks=2,
        grad_checkpointing=True,
    ).train()
    x = torch.randn(2, 3, 64, 64)
    with SavedActivations(b.parameters()) as saved:
        b(x)["dense"]
    tokens = 2 * (1 + 16) * b.tower.width * 4  # bytes of one block's input
    assert saved.bytes < 6 * tokens, saved.bytes / tokens


@pytest.mark.parametrize("arch", [pytest.param("DenseVLM", marks=pytest.mark.slow), "CLIPSelf"])
def test_region_methods_same_gradients_with_checkpointing(arch):
    batch = _region_batch(crops=arch == "CLIPSelf")

    def step(model):
        return sum(model(batch).values())

    def build(ckpt):
        return build_model(_region_cfg(arch, ckpt))

    plain, ckpt = _run(build, step, False), _run(build, step, True)
    # every trainable block, the first of them included (its input has no gradient)
    _assert_same(plain, ckpt, min_grads=2 * 10)
    assert plain[0] > 0


# -- CAT-Seg: aggregator layers and decoder (MODEL.CAT_SEG.GRAD_CHECKPOINTING) --------------------
def test_cat_seg_aggregator_same_gradients_with_checkpointing():
    image, text, guidance = _inputs()
    inputs = [image, text, *guidance]
    for t in inputs:
        t.requires_grad_(True)

    def build(ckpt):
        agg = _aggregator()
        agg.grad_checkpointing = ckpt
        return agg

    def step(agg):
        return agg(inputs[0], inputs[1], inputs[2:], (2, 2)).sigmoid().mean()

    results = []
    for ckpt in (False, True):
        results.append(_run(build, step, ckpt))
        results[-1][1].update({f"input{i}": t.grad.clone() for i, t in enumerate(inputs)})
        for t in inputs:
            t.grad = None
    _assert_same(*results, min_grads=40)
    assert results[1][2] < 0.5 * results[0][2]


@pytest.mark.slow
def test_cat_seg_model_same_gradients_with_checkpointing():
    g = torch.Generator().manual_seed(0)
    batch = [
        {
            "image": torch.randint(0, 256, (3, 128, 128), generator=g, dtype=torch.uint8),
            "sem_seg": torch.randint(0, 4, (128, 128), generator=g),
        }
        for _ in range(2)
    ]

    def build(ckpt):
        model = build_model(cat_seg_cfg(**{"MODEL.CAT_SEG.GRAD_CHECKPOINTING": ckpt}))
        model.train_classes = Vocabulary.from_names(["ball", "box", "sky", "grass"])
        return model

    plain = _run(build, lambda m: m(batch)["loss_sem_seg"], False)
    ckpt = _run(build, lambda m: m(batch)["loss_sem_seg"], True)
    _assert_same(plain, ckpt, min_grads=40)


# -- F-ViT: pyramid, FPN, box and mask heads (MODEL.FVIT.GRAD_CHECKPOINTING) -----------------------
def _fvit_cfg(ckpt: bool):
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.merge_from_file(str(ROOT / "configs" / "demo" / "fvit.yaml"))
    return _set(
        cfg,
        {
            "DATASETS.TRAIN": (),
            "DATASETS.TEST": (),
            "MODEL.CLIP.TEXT_CACHE.ENABLED": False,
            "MODEL.FVIT.GRAD_CHECKPOINTING": ckpt,
            "MODEL.ROI_HEADS.NUM_CLASSES": 3,
            "MODEL.TEXT_CLASSIFIER.TEXT.PROMPTS": ["a photo of a {}."],
            "MODEL.MASK_ON": True,
            "MODEL.ROI_MASK_HEAD.NAME": "MaskRCNNConvUpsampleHead",
            "MODEL.ROI_MASK_HEAD.NUM_CONV": 2,
            "MODEL.ROI_MASK_HEAD.CONV_DIM": 32,
            "MODEL.ROI_MASK_HEAD.NORM": "BN",
            "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK": True,
            "MODEL.ROI_MASK_HEAD.POOLER_TYPE": "ROIAlignV2",
        },
    )


def _detection_batch():
    g = torch.Generator().manual_seed(5)
    batch = []
    for _ in range(2):
        boxes = torch.tensor([[10.0, 12, 70, 80], [60, 40, 150, 120]])
        masks = torch.zeros(2, 160, 160, dtype=torch.bool)
        for m, (x0, y0, x1, y1) in zip(masks, boxes.int().tolist(), strict=True):
            m[y0:y1, x0:x1] = True
        inst = Instances((160, 160), gt_boxes=Boxes(boxes), gt_classes=torch.tensor([0, 1]))
        inst.gt_masks = BitMasks(masks)
        image = torch.randint(0, 256, (3, 160, 160), generator=g, dtype=torch.uint8)
        batch.append({"image": image, "instances": inst})
    return batch


def test_fvit_same_gradients_and_statistics_with_checkpointing():
    batch = _detection_batch()

    def step(model):
        losses = model(batch)
        assert "loss_mask" in losses
        return sum(losses.values())

    def build(ckpt):
        model = build_model(_fvit_cfg(ckpt))
        densevlm_d2.set_vocabulary(model, ["ball", "box", "ring"], novel_classes=["ring"])
        return model

    plain, ckpt = _run(build, step, False), _run(build, step, True)
    _assert_same(plain, ckpt, min_grads=30)
    stats = [{k: v for k, v in r[3].state_dict().items() if "running" in k} for r in (plain, ckpt)]
    assert stats[0] and all(torch.equal(v, stats[1][k]) for k, v in stats[0].items())
    model = ckpt[3]
    assert model.backbone.grad_checkpointing and model.backbone.bottom_up.grad_checkpointing
    heads = model.roi_heads
    assert "forward" in vars(heads.box_head) and "layers" in vars(heads.mask_head)
    assert "forward" not in vars(plain[3].roi_heads.box_head)
