#!/usr/bin/env python
"""What activation checkpointing saves, and what half-precision frozen CLIPs change.

    python tools/measure_checkpointing.py memory      # full-size B/16 recipes, one image each
    python tools/measure_checkpointing.py precision   # B/16 student, L/14-336 teacher, F-ViT B/16

``memory``: the bytes autograd keeps for the backward pass (distinct saved storages, parameters
left out; :class:`~densevlm_d2.utils.activation_checkpointing.SavedActivations`) of one training
image through each large trainable part, with checkpointing off and on: the DenseVLM student's
vision blocks (``MODEL.CLIP.GRAD_CHECKPOINTING``), CAT-Seg's aggregator layers and decoder
(``MODEL.CAT_SEG.GRAD_CHECKPOINTING``, ``--classes`` training classes), F-ViT's pyramid, FPN, box
head (``--rois`` sampled RoIs) and mask head (a quarter of them, the positive fraction) at the
OV-LVIS canvas (``MODEL.FVIT.GRAD_CHECKPOINTING``); F-ViT's RPN head is measured too (not
checkpointed). Random weights and inputs (sizes do not depend on values); forward passes only.
Batch norms are measured as plain BN (SyncBN needs a process group; the same sizes).

``precision``: random-weight CLIPs (``--seed``) at a ``--size`` canvas. DenseVLM: the teacher's
region features and region logits (cosine / temperature against ``--classes`` random class
embeddings) and the DenseVLM loss against the student's regions, with the teacher in float32,
under AMP (float16 / bfloat16 autocast over the float32 teacher) and stored in float16
(``MODEL.DENSEVLM.TEACHER.PRECISION``). F-ViT: the frozen backbone's block outputs and dense map the
same ways. Differences: the largest absolute difference relative to the largest float32 value.
"""

from __future__ import annotations

import densevlm_d2  # first: its import silences fvcore's import warnings before detectron2's

# isort: split

import argparse
import json
import sys
from pathlib import Path

import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone, build_model
from detectron2.modeling.roi_heads import ROI_BOX_HEAD_REGISTRY, ROI_MASK_HEAD_REGISTRY
from detectron2.utils.events import EventStorage

from densevlm_d2.clip.precision import store_matmul_weights
from densevlm_d2.modeling import BoxPooler, CLIPViTBackbone
from densevlm_d2.modeling.losses import densevlm_loss
from densevlm_d2.utils.activation_checkpointing import SavedActivations, recompute_in_backward
from densevlm_d2.utils.registration import add_register_argument, run_register_files

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20


def load_cfg(path: str, *opts):
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.merge_from_file(path)
    cfg.merge_from_list(
        ["MODEL.CLIP.RANDOM_INIT", True, "MODEL.CLIP.CHECKPOINT", "", "MODEL.DEVICE", "cpu"]
        + ["DATASETS.TRAIN", (), "DATASETS.TEST", (), "MODEL.CLIP.TEXT_CACHE.ENABLED", False]
        + list(opts)
    )
    return cfg


def saved_mib(module: torch.nn.Module, fn) -> float:
    with SavedActivations(module.parameters()) as saved:
        fn()
    return saved.bytes / MIB


def off_on(module, fn, switch) -> dict[str, float]:
    """Saved MiB of ``fn()`` with ``switch(False)`` and ``switch(True)``."""
    out = {}
    for key, on in (("off", False), ("on", True)):
        switch(on)
        out[key] = round(saved_mib(module, fn), 1)
    return out


# -- memory ----------------------------------------------------------------------------------------
def region_student(args) -> dict:
    cfg = load_cfg(args.region_config)
    backbone = build_backbone(cfg).train()
    size = cfg.INPUT.REGIONS.IMAGE_SIZE
    x = torch.randn(1, 3, size, size)

    def switch(on):
        backbone.tower.grad_checkpointing = on

    return {"clip blocks": off_on(backbone, lambda: backbone(x)["dense"], switch)}


def cat_seg(args) -> dict:
    cfg = load_cfg(args.cat_seg_config)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    r = cfg.MODEL.CAT_SEG.CLIP_RESOLUTION
    x = torch.randn(1, 3, r, r)
    backbone = model.backbone

    def clip_switch(on):
        backbone.tower.grad_checkpointing = on

    features = lambda: backbone.features(x, dense=True, blocks=model.guidance_blocks)  # noqa: E731
    out = {"clip (attention weights)": off_on(backbone, features, clip_switch)}
    with torch.no_grad():
        f = features()
        guidance = [f.dense] + [
            up(f.blocks[i]) for up, i in zip(model.guidance_up, model.guidance_blocks, strict=True)
        ]
    text = torch.nn.functional.normalize(torch.randn(1, args.classes, 1, f.dense.shape[1]), dim=-1)
    agg = model.aggregator

    def agg_switch(on):
        agg.grad_checkpointing = on

    run = lambda: agg(f.dense, text, guidance, model.train_pooling)  # noqa: E731
    out[f"aggregator + decoder ({args.classes} classes)"] = off_on(agg, run, agg_switch)
    return out


def fvit(args) -> dict:
    bn = ["MODEL.FVIT.PYRAMID_NORM", "BN", "MODEL.FPN.NORM", "BN"]
    bn += ["MODEL.ROI_BOX_HEAD.NORM", "BN", "MODEL.ROI_MASK_HEAD.NORM", "BN"]
    cfg = load_cfg(args.fvit_config, *bn)
    torch.manual_seed(0)
    fpn = build_backbone(cfg).train()
    pyramid = fpn.bottom_up
    n = cfg.MODEL.FVIT.PAD_TO // cfg.MODEL.FVIT.TOKEN_STRIDE
    width = pyramid.clip_backbone.tower.width
    blocks = [torch.randn(1, width, n, n) for _ in range(4)]
    out = {}

    def pyr_switch(on):
        pyramid.grad_checkpointing = on

    out["pyramid"] = off_on(pyramid.pyramid, lambda: pyramid.pyramid_maps(blocks), pyr_switch)
    with torch.no_grad():
        maps = pyramid.pyramid_maps(blocks)
    maps = {k: v.requires_grad_(True) for k, v in maps.items()}
    maps["clip_dense"] = torch.zeros(1)

    def fpn_switch(on):
        fpn.grad_checkpointing = on

    out["fpn"] = off_on(fpn, lambda: fpn(maps), fpn_switch)
    with torch.no_grad():
        features = fpn(maps)
    from detectron2.modeling.proposal_generator import build_proposal_generator

    rpn = build_proposal_generator(cfg, fpn.output_shape()).train()
    levels = [features[f].requires_grad_(True) for f in cfg.MODEL.RPN.IN_FEATURES]
    out["rpn head (not checkpointed)"] = {
        "off": round(saved_mib(rpn.rpn_head, lambda: rpn.rpn_head(levels)), 1)
    }
    c = cfg.MODEL.FPN.OUT_CHANNELS
    res = cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
    box_in = torch.randn(args.rois, c, res, res, requires_grad=True)
    box_head = ROI_BOX_HEAD_REGISTRY.get(cfg.MODEL.ROI_BOX_HEAD.NAME)(
        cfg, ShapeSpec(channels=c, height=res, width=res)
    ).train()
    out[f"box head ({args.rois} RoIs)"] = head_off_on(box_head, "forward", box_in)
    if cfg.MODEL.MASK_ON:
        res = cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION
        mask_in = torch.randn(args.rois // 4, c, res, res, requires_grad=True)
        mask_head = ROI_MASK_HEAD_REGISTRY.get(cfg.MODEL.ROI_MASK_HEAD.NAME)(
            cfg, ShapeSpec(channels=c, height=res, width=res)
        ).train()
        out[f"mask head ({args.rois // 4} RoIs)"] = head_off_on(mask_head, "layers", mask_in)
    return out


def head_off_on(head, method: str, x: torch.Tensor) -> dict[str, float]:
    off = saved_mib(head, lambda: getattr(head, method)(x))
    recompute_in_backward(head, method)
    on = saved_mib(head, lambda: getattr(head, method)(x))
    return {"off": round(off, 1), "on": round(on, 1)}


# -- precision -------------------------------------------------------------------------------------
def _random_clip(name: str, seed: int) -> CLIPViTBackbone:
    torch.manual_seed(seed)
    return CLIPViTBackbone(model_name=name, random_init=True, text_cache_dir=None)


def _variants(clip: CLIPViTBackbone, run) -> dict[str, torch.Tensor]:
    """``run(clip)`` in float32, under float16 and bfloat16 AMP, and with the tower stored in
    float16 (the last: the weights are rounded in place)."""
    out = {}
    with torch.no_grad():
        out["float32"] = run(clip)
        for name, dtype in (("amp float16", torch.float16), ("amp bfloat16", torch.bfloat16)):
            with torch.autocast("cpu", dtype=dtype):
                out[name] = run(clip)
        store_matmul_weights(clip.model.visual, torch.float16)
        clip.precision = torch.float16
        out["stored float16"] = run(clip)
    return out


def _relative(values: dict) -> dict[str, float]:
    """Largest absolute difference from float32 over the largest float32 magnitude."""
    ref = values["float32"].float()
    scale = ref.abs().max().item()
    return {
        k: float(f"{(v.float() - ref).abs().max().item() / scale:.3g}")
        for k, v in values.items()
        if k != "float32"
    }


def precision(args) -> dict:
    size, g = args.size, torch.Generator().manual_seed(args.seed)
    images = torch.randn(args.images, 3, size, size, generator=g)
    boxes = [torch.tensor([[0.0, 0, size / 2, size / 2], [size / 4, 0, size, size * 0.75]])] * len(
        images
    )
    student = _random_clip(args.student, args.seed)
    with torch.no_grad():
        student_regions = BoxPooler(student.patch_size)(student.features(images).dense, boxes)
    teacher = _random_clip(args.teacher, args.seed + 1)
    d = teacher.embed_dim
    text_t = torch.nn.functional.normalize(torch.randn(args.classes, d, generator=g), dim=-1)
    text_s = torch.nn.functional.normalize(
        torch.randn(args.classes, student.embed_dim, generator=g), dim=-1
    )
    is_thing = torch.arange(args.classes) < args.classes // 2
    p = teacher.patch_size
    pad = (-size) % p

    def teacher_regions(clip):
        dense = clip.features(torch.nn.functional.pad(images, (0, pad, 0, pad))).dense
        return BoxPooler(p)(dense.float(), boxes)

    regions = _variants(teacher, teacher_regions)
    logits = {k: v @ text_t.T / args.temperature for k, v in regions.items()}
    losses = {}
    for k, v in regions.items():
        loss, _ = densevlm_loss(
            student_regions, v, text_s, text_t, is_thing, args.temperature, 0.0, "all", True
        )
        losses[k] = loss.reshape(1)
    del teacher
    fvit_clip = _random_clip(args.student, args.seed + 2)
    n = fvit_clip.tower.num_blocks  # F-ViT's blocks: [3, 5, 7, 11] of 12
    blocks = sorted({max(0, n * k // 12 - 1) for k in (4, 6, 8)} | {n - 1})

    def fvit_features(clip):
        out = clip.features(images, blocks=blocks)
        return torch.cat([out.dense.flatten()] + [out.blocks[i].float().flatten() for i in blocks])

    features = _variants(fvit_clip, fvit_features)
    return {
        "teacher region features": _relative(regions),
        "teacher region logits": _relative(logits),
        "densevlm loss": {
            **_relative(losses),
            "float32 value": float(f"{losses['float32'].item():.6g}"),
        },
        "fvit backbone features": _relative(features),
        "stored float16 equals amp float16": bool(
            torch.equal(regions["stored float16"], regions["amp float16"].float())
            and torch.equal(features["stored float16"], features["amp float16"].float())
        ),
    }


METHODS = {"densevlm": region_student, "cat_seg": cat_seg, "fvit": fvit}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_register_argument(parser)
    parser.add_argument("--out", help="also write the figures to this JSON file")
    sub = parser.add_subparsers(dest="command", required=True)
    mem = sub.add_parser("memory", help="saved activations with checkpointing off and on")
    mem.add_argument("--region-config", default=str(ROOT / "configs/coco/densevlm_eva02_b16.yaml"))
    mem.add_argument("--cat-seg-config", default=str(ROOT / "configs/cat_seg/eva02_b16.yaml"))
    mem.add_argument("--fvit-config", default=str(ROOT / "configs/ovlvis/fvit_eva02_b16.yaml"))
    mem.add_argument("--classes", type=int, default=171, help="CAT-Seg training classes")
    mem.add_argument("--rois", type=int, default=512, help="F-ViT sampled RoIs per image")
    mem.add_argument(
        "--methods",
        nargs="+",
        choices=sorted(METHODS),
        default=sorted(METHODS),
        help="what to measure",
    )
    pre = sub.add_parser("precision", help="half-precision frozen CLIPs against float32 and AMP")
    pre.add_argument("--student", default="EVA02-CLIP-B-16")
    pre.add_argument("--teacher", default="EVA02-CLIP-L-14-336")
    pre.add_argument("--size", type=int, default=224, help="canvas side (px)")
    pre.add_argument("--images", type=int, default=1)
    pre.add_argument("--classes", type=int, default=316)
    pre.add_argument("--temperature", type=float, default=0.01)
    pre.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    run_register_files(args.register)
    with EventStorage(0):
        if args.command == "memory":
            result = {k: v for m in args.methods for k, v in METHODS[m](args).items()}
        else:
            result = precision(args)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
