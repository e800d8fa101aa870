#!/usr/bin/env python
"""Latency of the app's actions (densevlm_d2.predictor, what each button calls), per model.

    python tools/benchmark_app.py                       # the demo's CLIP and EVA02-CLIP-B/16
    python tools/benchmark_app.py --device cuda --out bench_app.json
    python tools/benchmark_app.py --demo-dir output/demo   # the demo's trained DenseVLM

Two models: the demo's small CLIP (EVA02-Demo-16 under configs/demo/sem_seg.yaml: the demo's
DenseVLM checkpoint when ``--demo-dir`` holds one, else random weights) on a demo-sized image, and
the full-size EVA02-CLIP-B/16 (random weights, same speed) under SCLIP's protocol
(configs/sem_seg/Base-DenseSeg.yaml) at short sides ``--sizes`` on the shipped 640x427 photograph.
Per model and size: the model's loading, the first text embeddings of the vocabulary (a fresh
cache folder per model: computed, not read), then, with the embeddings cached, the median of
``--repeats`` segmentations, the first region query of the image (its dense pass), and the median
of further box and point queries on it (pooling only; the point query reuses the segmentation, as
the app does). Times are wall-clock seconds in this process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DEMO_VOCABULARY = "ball, box, tent, kite, ring, cross, sky, grass, water, wall, sand"
PHOTO_VOCABULARY = "rocket, tower, smoke, sky, ground, light, cloud, tree, road, building, person"


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(predictor_fn, image, vocabulary: str, repeats: int) -> dict:
    os.environ["DENSEVLM_CACHE"] = tempfile.mkdtemp(prefix="bench_app_")  # a cold text cache
    t0 = time.perf_counter()
    predictor = predictor_fn()
    load = time.perf_counter() - t0
    _, text = predictor.warm_text(vocabulary)
    w, h = image.size
    box = (w * 0.25, h * 0.25, w * 0.75, h * 0.75)
    seg = predictor.segment(image, vocabulary)
    t0 = time.perf_counter()
    predictor.query_box(image, box, vocabulary)
    first_query = time.perf_counter() - t0
    return {
        "model load s": load,
        "first text embeddings s": text,
        "segment s": _median(lambda: predictor.segment(image, vocabulary), repeats),
        "first query s": first_query,
        "box query s": _median(lambda: predictor.query_box(image, box, vocabulary), repeats),
        "point query s": _median(
            lambda: predictor.query_point(image, (w / 2, h / 2), vocabulary, seg), repeats
        ),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--demo-dir", default="output/demo")
    parser.add_argument("--sizes", type=int, nargs="*", default=[336, 448],
                        help="EVA02-B/16's short sides (none: the demo's CLIP only)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="also write the figures as json")
    args = parser.parse_args(argv)
    from densevlm_d2.predictor import OpenVocabPredictor
    from densevlm_d2.utils.registration import run_register_files

    run_register_files([str(ROOT / "demo" / "register.py")])
    rows = {}
    demo_ckpt = Path(args.demo_dir) / "models" / "densevlm.pt"
    demo_cfg = ROOT / "configs" / "demo" / "sem_seg.yaml"
    val = Path(args.demo_dir) / "datasets" / "demo_world" / "val"
    world = sorted(val.glob("*.jpg")) if val.is_dir() else []
    demo_image = (
        Image.open(world[0]).convert("RGB")
        if world
        else Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 160, 3), np.uint8))
    )
    weights = "demo DenseVLM" if demo_ckpt.is_file() else "random"
    opts = () if demo_ckpt.is_file() else ("MODEL.CLIP.RANDOM_INIT", "True")

    def demo():
        return OpenVocabPredictor.from_config(
            demo_cfg, checkpoint=demo_ckpt if demo_ckpt.is_file() else None, opts=opts,
            device=args.device,
        )  # fmt: skip

    label = f"EVA02-Demo-16 ({weights}), {demo_image.width}x{demo_image.height}, 11 classes"
    rows[label] = measure(demo, demo_image, DEMO_VOCABULARY, args.repeats)
    print(label, json.dumps({k: round(v, 3) for k, v in rows[label].items()}), flush=True)
    photo = Image.open(ROOT / "densevlm_d2" / "assets" / "rocket.jpg").convert("RGB")
    base = ROOT / "configs" / "sem_seg" / "Base-DenseSeg.yaml"
    for size in args.sizes:

        def full(size=size):
            torch.manual_seed(0)
            o = ["MODEL.CLIP.MODEL_NAME", "EVA02-CLIP-B-16", "MODEL.CLIP.RANDOM_INIT", "True",
                 "MODEL.DENSE_SEG.SHORT_SIDE", str(size)]  # fmt: skip
            return OpenVocabPredictor.from_config(base, opts=o, device=args.device)

        label = f"EVA02-CLIP-B-16 (random), short side {size}, 640x427, 11 classes"
        rows[label] = measure(full, photo, PHOTO_VOCABULARY, args.repeats)
        print(label, json.dumps({k: round(v, 3) for k, v in rows[label].items()}), flush=True)
    keys = list(next(iter(rows.values())))
    print(f"\n| model | {' | '.join(keys)} |\n|---|{'---|' * len(keys)}")
    for label, row in rows.items():
        print(f"| {label} | " + " | ".join(f"{row[k]:.2f}" for k in keys) + " |")
    threads = torch.get_num_threads()
    print(f"\n{threads} CPU threads, device {args.device}, torch {torch.__version__}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
