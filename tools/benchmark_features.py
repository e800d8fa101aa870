#!/usr/bin/env python
"""Throughput of dense + box + mask features (the region-classification workload) on random images.

    python tools/benchmark_features.py --model EVA02-CLIP-B-16 --image-size 512 --batch 4 --iters 5

Weights are random (speed does not depend on them). Reports images/s after one warm-up batch and
peak memory (CUDA allocator peak on a GPU, process peak RSS on the CPU).
"""

import argparse
import resource
import time

import torch

import densevlm_d2


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="EVA02-CLIP-B-16")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--regions", type=int, default=30, help="boxes and masks per image")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    args = parser.parse_args(argv)

    enc = densevlm_d2.load_clip(
        args.model,
        image_size=args.image_size,
        device=args.device,
        text_cache_dir=None,
        random_init=True,
    )
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, generator=g).to(args.device)
    xy = torch.rand(args.batch, args.regions, 2, generator=g) * args.image_size * 0.7
    boxes = [torch.cat([p, p + args.image_size * 0.3], 1).to(args.device) for p in xy]
    h, w = enc.token_grid
    masks = [
        (torch.rand(args.regions, h, w, generator=g) > 0.7).to(args.device)
        for _ in range(args.batch)
    ]

    def step():
        with (
            torch.no_grad(),
            torch.autocast(x.device.type, dtype=dtype, enabled=dtype != torch.float32),
        ):
            out = enc.encode_regions(x, boxes=boxes, masks=masks)
        if x.is_cuda:
            torch.cuda.synchronize()
        return out

    step()  # warm-up
    if x.is_cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.iters):
        step()
    dt = time.perf_counter() - t0
    n = args.batch * args.iters
    if x.is_cuda:
        mem = f"peak CUDA memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
    else:
        mem = f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    print(
        f"{args.model} {args.image_size}px batch {args.batch} {args.dtype} on {args.device} "
        f"({torch.get_num_threads()} threads): {n / dt:.2f} images/s, "
        f"{dt / n * 1000:.0f} ms/image, {mem}"
    )


if __name__ == "__main__":
    main()
