#!/usr/bin/env python
"""Training and inference speed and peak memory of CAT-Seg at a config's size.

    python tools/benchmark_cat_seg.py                                   # EVA02-B/16, 384 px, CPU
    python tools/benchmark_cat_seg.py --config configs/demo/cat_seg.yaml --register demo/register.py
    python tools/benchmark_cat_seg.py --device cuda --amp bfloat16 --iters 20 --out bench.json

The model is the config's architecture at full size with random weights (``MODEL.CLIP.RANDOM_INIT``;
speed does not depend on the values). Training: ``--iters`` optimiser steps after ``--warmup`` on
random ``--batch`` x crop-size images and labels of the training vocabulary's size
(``--train-classes``, default COCO-Stuff's 171), the config's optimiser (CLIP learning-rate
multiplier, full-model gradient clipping) and AMP setting; the text tower runs every step when it
trains, as in real training. Inference: ``--images`` random images of ADE20K val's typical size
(512 x 683) through the test mapper's resize and the config's protocol (sliding windows by
default), with a ``--test-classes`` vocabulary (default ADE-150's 150). Peak memory: CUDA
``max_memory_allocated``; CPU: the process's peak RSS (the figure includes model building).
"""

from __future__ import annotations

import densevlm_d2  # first: its import silences fvcore's import warnings before detectron2's

# isort: split

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from densevlm_d2.engine.trainer import Trainer
from densevlm_d2.utils.registration import add_register_argument, run_register_files

ROOT = Path(__file__).resolve().parents[1]


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(args):
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.merge_from_file(args.config)
    cfg.merge_from_list(
        ["MODEL.CLIP.RANDOM_INIT", True, "MODEL.CLIP.CHECKPOINT", "", "MODEL.DEVICE", args.device]
        + ["DATASETS.TRAIN", (), "DATASETS.TEST", (), "MODEL.CLIP.TEXT_CACHE.ENABLED", False]
        + list(args.opts)
    )
    if args.amp:
        cfg.merge_from_list(["SOLVER.AMP.ENABLED", True, "SOLVER.AMP.PRECISION", args.amp])
    cfg.freeze()
    torch.manual_seed(0)
    model = build_model(cfg)
    return cfg, model


def bench_training(cfg, model, args) -> dict:
    device = torch.device(args.device)
    classes = [f"class {i}" for i in range(args.train_classes)]
    model.train_classes = classes
    model.train()
    optimizer = Trainer.build_optimizer(cfg, model)
    size = tuple(cfg.INPUT.CROP.SIZE)
    g = torch.Generator().manual_seed(0)
    batch = [
        {
            "image": torch.randint(0, 256, (3, *size), generator=g, dtype=torch.uint8),
            "sem_seg": torch.randint(0, len(classes), size, generator=g),
        }
        for _ in range(args.batch)
    ]
    amp = cfg.SOLVER.AMP.ENABLED
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}[cfg.SOLVER.AMP.PRECISION]
    scaler = torch.amp.GradScaler(device.type) if amp and dtype == torch.float16 else None
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(args.warmup + args.iters):
        _sync(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            loss = model(batch)["loss_sem_seg"]
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        _sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
        print(f"train step {i}: {time.perf_counter() - start:.3f} s", file=sys.stderr)
    per_iter = float(np.mean(times))
    return {
        "batch": args.batch,
        "crop": list(size),
        "classes": len(classes),
        "s_per_iter": per_iter,
        "iters_per_s": 1.0 / per_iter,
        "images_per_s": args.batch / per_iter,
        "peak_memory_mib": peak_memory_mib(device),
    }


def bench_inference(cfg, model, args) -> dict:
    device = torch.device(args.device)
    model.eval()
    classes = [f"class {i}" for i in range(args.test_classes)]
    rng = np.random.default_rng(0)
    resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    shapes = [(512, 683, 3), (683, 512, 3)]
    images = []
    for i in range(args.warmup + args.images):
        array = rng.integers(0, 256, shapes[i % 2], dtype=np.uint8)
        resized = T.apply_augmentations([resize], T.AugInput(array))[0].image
        images.append((torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1))), array))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    with torch.autocast(device.type, enabled=False):
        for i, (image, original) in enumerate(images):
            inp = {"image": image, "classes": classes, "height": original.shape[0]}
            inp["width"] = original.shape[1]
            _sync(device)
            start = time.perf_counter()
            out = model([inp])[0]["sem_seg"]
            _sync(device)
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
            assert out.shape[0] == len(classes)
            print(f"image {i}: {time.perf_counter() - start:.3f} s", file=sys.stderr)
    per_image = float(np.mean(times))
    return {
        "classes": len(classes),
        "sliding_window": cfg.MODEL.CAT_SEG.SLIDING_WINDOW,
        "s_per_image": per_image,
        "images_per_s": 1.0 / per_image,
        "peak_memory_mib": peak_memory_mib(device),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "cat_seg" / "eva02_b16.yaml"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", choices=["float16", "bfloat16"], default=None)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--train-classes", type=int, default=171)
    parser.add_argument("--test-classes", type=int, default=150)
    parser.add_argument("--skip", choices=["train", "inference"], default=None)
    parser.add_argument("--out", default="")
    add_register_argument(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides")
    args = parser.parse_args(argv)
    run_register_files(args.register)
    cfg, model = build(args)
    result = {
        "config": str(args.config),
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "amp": args.amp,
        "clip": cfg.MODEL.CLIP.MODEL_NAME,
        "clip_resolution": cfg.MODEL.CAT_SEG.CLIP_RESOLUTION,
    }
    if args.skip != "train":
        result["train"] = bench_training(cfg, model, args)
    if args.skip != "inference":
        result["inference"] = bench_inference(cfg, model, args)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return result


if __name__ == "__main__":
    main()
