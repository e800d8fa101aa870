#!/usr/bin/env python
"""Speed and peak memory of training-free segmentation under a benchmark's protocol.

    python tools/benchmark_sem_seg.py                                  # ADE-150, EVA02-B/16, CPU
    python tools/benchmark_sem_seg.py --device cuda --images 50 --out bench.json
    python tools/benchmark_sem_seg.py --image-dir datasets/ADEChallengeData2016/images/validation

The model is the config's architecture at full size (random weights unless ``--weights``); the
vocabulary is the benchmark's. Images are ``--image-dir``'s (sorted, the first ``--images``) or,
without one, random images of ADE20K val's typical size (512 x 683, alternately portrait and
landscape). Reported: the text embeddings' time (once per vocabulary and weights; a cache hit in
the text cache after the first run, random weights being seeded), images per second over the
images after ``--warmup`` ones for the windows batched (``--window-batch``, the default 16) and
one window at a time (as the public implementations run them), timed image by image in turn, and
peak memory (CUDA: ``max_memory_allocated``; CPU: the process's peak RSS).
"""

from __future__ import annotations

import densevlm_d2  # first: its import silences fvcore's import warnings before detectron2's

# isort: split

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_backbone
from PIL import Image

from densevlm_d2.modeling.meta_arch import CLIPDenseSegmenter
from densevlm_d2.utils.registration import add_register_argument, run_register_files

ROOT = Path(__file__).resolve().parents[1]


def load_images(image_dir: str, count: int, seed: int = 0) -> list[torch.Tensor]:
    if image_dir:
        files = sorted(p for p in Path(image_dir).iterdir() if p.suffix.lower() in (".jpg", ".png"))
        if not files:
            raise FileNotFoundError(f"no .jpg/.png images in {image_dir}")
        arrays = [np.asarray(Image.open(f).convert("RGB")) for f in files[:count]]
    else:
        rng = np.random.default_rng(seed)
        shapes = [(512, 683, 3), (683, 512, 3)]
        arrays = [rng.integers(0, 256, shapes[i % 2], dtype=np.uint8) for i in range(count)]
    return [torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))) for a in arrays]


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(ROOT / "configs/sem_seg/eva02_b16/ade20k_150.yaml"))
    parser.add_argument("--weights", default="", help="MODEL.CLIP.CHECKPOINT (default: random)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--image-dir", default="")
    parser.add_argument("--window-batch", type=int, default=16)
    parser.add_argument("--skip-one-at-a-time", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--seed", type=int, default=0, help="for the random weights")
    parser.add_argument("--out", default="", help="write the results as JSON")
    add_register_argument(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    run_register_files(args.register)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.merge_from_file(args.config)
    cfg.merge_from_list(["MODEL.CLIP.CHECKPOINT", args.weights, "MODEL.CLIP.RANDOM_INIT",
                         str(not args.weights), *args.opts])  # fmt: skip
    torch.manual_seed(args.seed)  # the same random weights every run (and text cache hits)
    device = torch.device(args.device)
    dataset = cfg.DATASETS.TEST[0]
    classes = densevlm_d2.dataset_vocabulary(dataset).queries
    background = classes.background_index
    model = CLIPDenseSegmenter(
        backbone=build_backbone(cfg), **CLIPDenseSegmenter.protocol_from_config(cfg)
    )
    model.to(device).eval()
    images = load_images(args.image_dir, args.images + args.warmup)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    t0 = time.perf_counter()
    text, _ = model.text_queries(classes)
    sync()
    result = {
        "config": os.path.relpath(args.config, ROOT),
        "model": cfg.MODEL.CLIP.MODEL_NAME,
        "dataset": dataset,
        "classes": len(classes),
        "queries": len(text),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "protocol": {k: cfg.MODEL.DENSE_SEG[k] for k in ("SHORT_SIDE", "WINDOW", "STRIDE")},
        "text_embeddings_s": round(time.perf_counter() - t0, 2),
        "image_sizes": [list(s) for s in sorted({tuple(im.shape[1:]) for im in images})],
    }
    modes = {"batched": args.window_batch}
    if not args.skip_one_at_a_time and args.window_batch > 1:
        modes["one_window_at_a_time"] = 1
    seconds = dict.fromkeys(modes, 0.0)
    peak = {}
    for label, batch in modes.items():  # warm-up, and the peak memory of each mode
        model.window_batch = batch
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for im in images[: max(args.warmup, 1)]:
            model.segment(im, classes, background).argmax(0)
        peak[label] = peak_memory_mib(device)
    # the modes alternate image by image, so that a change in the machine's load hits both alike
    for im in images[args.warmup :]:
        for label, batch in modes.items():
            model.window_batch = batch
            sync()
            t0 = time.perf_counter()
            model.segment(im, classes, background).argmax(0)  # the argmax: what the evaluator does
            sync()
            seconds[label] += time.perf_counter() - t0
    for label, batch in modes.items():
        result[label] = {
            "window_batch": batch,
            "images_per_s": round(args.images / seconds[label], 3),
            "s_per_image": round(seconds[label] / args.images, 3),
            "peak_memory_mib": round(peak[label], 1),
        }
        print(label, result[label], flush=True)
    if "one_window_at_a_time" in result:
        result["speedup_batched"] = round(
            result["batched"]["images_per_s"] / result["one_window_at_a_time"]["images_per_s"], 2
        )
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
