#!/usr/bin/env python
"""GPU speed in one run, written as JSON: DenseVLM training (the published setting:
EVA02-CLIP-B/16 student, EVA02-CLIP-L/14-336 teacher, 512 px, 16 images per GPU, and the largest
batch that fits), in float16 and bfloat16; region evaluation (boxes + masks, batched); F-ViT
training and inference; model FLOPs per image and the share of the GPU's bfloat16 peak they reach.

    python tools/benchmark_gpu.py --out output/gpu_benchmark.json
    python tools/benchmark_gpu.py --quick --device cpu --out /tmp/b.json    # tiny models: a dry run

Inputs are synthetic batches held in memory (random weights: speed does not depend on them), so the
figures are the model's; ``mapper_images_per_s`` says how fast one data-loader worker prepares
512-px training images, to size DATALOADER.NUM_WORKERS. Peak memory is the CUDA allocator's peak.
"""

import densevlm_d2  # first: its import silences fvcore's import warnings before detectron2's

# isort: split

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from detectron2.config import get_cfg
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from densevlm_d2.clip.models import embed_dim_of
from densevlm_d2.data.mappers import RegionTrainMapper
from densevlm_d2.engine import Trainer
from densevlm_d2.engine.amp_step import AMPTrainStep
from densevlm_d2.utils import atomic_write
from densevlm_d2.utils.registration import run_register_files

ROOT = Path(__file__).resolve().parents[1]
# dense bfloat16 tensor-core peak (TFLOP/s) by device name; --peak-tflops overrides
PEAKS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.1, "RTX 3090": 71.0}
PRECISIONS = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_memory_gib(device):
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def densevlm_cfg(args, batch, precision):
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.merge_from_file(str(ROOT / "configs/coco/densevlm_eva02_b16.yaml"))
    student, teacher = ("EVA02-Tiny-16",) * 2 if args.quick else (args.student, args.teacher)
    cfg.MODEL.DEVICE = args.device
    cfg.MODEL.CLIP.MODEL_NAME, cfg.MODEL.DENSEVLM.TEACHER.MODEL_NAME = student, teacher
    cfg.MODEL.CLIP.CHECKPOINT = cfg.MODEL.DENSEVLM.TEACHER.CHECKPOINT = ""
    cfg.MODEL.CLIP.RANDOM_INIT = True
    cfg.MODEL.CLIP.FINETUNE = "blocks"
    cfg.MODEL.CLIP.TRAINABLE_BLOCKS = 2 if args.quick else 12
    cfg.INPUT.REGIONS.IMAGE_SIZE = args.image_size
    cfg.MODEL.CLIP.TEXT_CACHE.ENABLED = False
    cfg.SOLVER.IMS_PER_BATCH = batch
    cfg.SOLVER.AMP.ENABLED = precision != "float32"
    cfg.SOLVER.AMP.PRECISION = precision if precision != "float32" else "float16"
    cfg.SOLVER.EXPORT_CLIP = False
    return cfg


def text_files(cfg, work: Path):
    """Random class embeddings in the published layout (the text towers are not what is timed)."""
    vocabulary = cfg.MODEL.DENSEVLM.VOCABULARY
    names = densevlm_d2.dataset_vocabulary(vocabulary).names
    rng = np.random.default_rng(0)
    for node, model in ((cfg.MODEL.CLIP, "student"), (cfg.MODEL.DENSEVLM.TEACHER, "teacher")):
        path = work / f"{model}_{node.MODEL_NAME}.npy"
        size = (len(names), embed_dim_of(node.MODEL_NAME))
        np.save(path, rng.normal(size=size).astype(np.float32))
        node.TEXT_EMBEDDINGS = [[vocabulary, str(path)]]


def region_batch(batch, size, cells=6):
    """``batch`` uint8 canvases with 6 x 6 grid boxes each, as the train mapper gives them."""
    from densevlm_d2.data.mappers import grid_boxes

    g = torch.Generator().manual_seed(0)
    return [
        {"image": torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8),
         "boxes": grid_boxes(cells, cells, size, size * 0.75)}
        for _ in range(batch)
    ]  # fmt: skip


def time_steps(step, iters, device):
    with EventStorage(0) as storage:
        step.storage = storage
        step.iter = storage.iter = 0
        step.run_step()  # warm-up (and cuDNN / allocator set-up)
        sync(device)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for i in range(1, iters + 1):
            step.iter = storage.iter = i
            step.run_step()
        sync(device)
    return (time.perf_counter() - start) / iters


def densevlm_train(args, work, precision, batch):
    cfg = densevlm_cfg(args, batch, precision)
    text_files(cfg, work)
    model = Trainer.build_model(cfg).train()
    optimizer = Trainer.build_optimizer(cfg, model)
    data = region_batch(batch, args.image_size)
    step = AMPTrainStep(model, iter([data] * (args.iters + 2)), optimizer,
                           precision != "float32", PRECISIONS[precision])  # fmt: skip
    seconds = time_steps(step, args.iters, args.device)
    flops = train_flops(model, data, args.device, PRECISIONS[precision])
    del model, optimizer, step
    return {"batch": batch, "precision": precision, "s_per_iter": seconds,
            "images_per_s": batch / seconds, "peak_gib": peak_memory_gib(args.device),
            "flops_per_image": flops / batch}  # fmt: skip


def train_flops(model, data, device, dtype):
    """Model FLOPs of one training step (student and teacher forward, student backward)."""
    with FlopCounterMode(display=False) as counter, EventStorage(0):
        with torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32):
            loss = sum(model(data).values())
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def largest_batch(args, work, precision, start):
    """Doubling, then the last size that ran (CUDA only)."""
    best, batch = None, start
    while batch <= args.max_batch:
        try:
            best = densevlm_train(args, work, precision, batch)
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
        batch *= 2
    return best


def region_eval(args):
    name = "EVA02-Tiny-16" if args.quick else args.student
    enc = densevlm_d2.load_clip(name, random_init=True, image_size=args.image_size,
                                device=args.device, text_cache_dir=None)  # fmt: skip
    batch, size = (2 if args.quick else 16), args.image_size
    x = torch.randn(batch, 3, size, size, device=args.device)
    boxes = [torch.tensor([[8.0, 8.0, size / 2, size / 2]] * 30, device=args.device)] * batch
    grid = enc.token_grid
    masks = [torch.ones(30, *grid, dtype=torch.bool, device=args.device)] * batch
    with torch.no_grad(), torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16):
        enc.encode_regions(x, boxes=boxes, masks=masks)
        sync(args.device)
        start = time.perf_counter()
        for _ in range(args.iters):
            enc.encode_regions(x, boxes=boxes, masks=masks)
        sync(args.device)
    seconds = (time.perf_counter() - start) / args.iters
    return {"batch": batch, "regions_per_image": 60, "images_per_s": batch / seconds,
            "precision": "bfloat16"}  # fmt: skip


def fvit(args):
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    if args.quick:  # the demo's small recipe, with its EVA02-Demo-16
        run_register_files([str(ROOT / "demo" / "register.py")])
    config = "configs/demo/fvit.yaml" if args.quick else "configs/ovcoco/fvit_eva02_b16.yaml"
    cfg.merge_from_file(str(ROOT / config))
    cfg.merge_from_list([
        "MODEL.DEVICE", args.device, "MODEL.CLIP.CHECKPOINT", "", "MODEL.CLIP.RANDOM_INIT", "True",
        "MODEL.CLIP.TEXT_CACHE.ENABLED", "False", "DATASETS.TRAIN", "()", "DATASETS.TEST", "()",
    ])  # fmt: skip
    if not args.device.startswith("cuda"):
        cfg.merge_from_list(["MODEL.FVIT.PYRAMID_NORM", "BN", "MODEL.FPN.NORM", "BN",
                             "MODEL.ROI_BOX_HEAD.NORM", "BN"])  # fmt: skip
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    cfg.MODEL.TEXT_CLASSIFIER.CLASS_NAMES = [f"class {i}" for i in range(num_classes)]
    model = Trainer.build_model(cfg)
    size, batch = cfg.INPUT.LSJ.IMAGE_SIZE, (2 if args.quick else 8)
    g = torch.Generator().manual_seed(0)
    data = []
    for _ in range(batch):
        inst = Instances((size, size))
        xy = torch.rand(5, 2, generator=g) * size * 0.6
        inst.gt_boxes = Boxes(torch.cat([xy, xy + size * 0.2], 1))
        inst.gt_classes = torch.randint(0, cfg.MODEL.ROI_HEADS.NUM_CLASSES, (5,), generator=g)
        data.append({"image": torch.randint(0, 256, (3, size, size), dtype=torch.uint8),
                     "instances": inst, "height": size, "width": size})  # fmt: skip
    optimizer = Trainer.build_optimizer(cfg, model)
    amp = args.device.startswith("cuda")
    step = AMPTrainStep(model.train(), iter([data] * (args.iters + 2)), optimizer, amp,
                           torch.bfloat16)  # fmt: skip
    train_s = time_steps(step, args.iters, args.device)
    model.eval()
    with (
        torch.no_grad(),
        torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16, enabled=amp),
    ):
        model(data)
        sync(args.device)
        start = time.perf_counter()
        for _ in range(args.iters):
            model(data)
        sync(args.device)
    infer_s = (time.perf_counter() - start) / args.iters
    return {"config": config, "batch": batch, "train_images_per_s": batch / train_s,
            "inference_images_per_s": batch / infer_s}  # fmt: skip


def mapper_speed(args, work):
    images = work / "mapper"
    images.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(
            images / f"{i}.jpg"
        )
    mapper = RegionTrainMapper(image_size=args.image_size)
    records = [{"file_name": str(p), "image_id": p.stem} for p in sorted(images.glob("*.jpg"))]
    start = time.perf_counter()
    for r in records * 2:
        mapper(r)
    return len(records) * 2 / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="output/gpu_benchmark.json")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--student", default="EVA02-CLIP-B-16")
    parser.add_argument("--teacher", default="EVA02-CLIP-L-14-336")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=16, help="images per GPU (published: 16)")
    parser.add_argument("--iters", type=int, default=5, help="timed iterations after a warm-up")
    parser.add_argument("--max-batch", type=int, default=128)
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--quick", action="store_true", help="tiny models, small batches")
    parser.add_argument("--skip", nargs="*", default=[], choices=["largest", "eval", "fvit"])
    args = parser.parse_args(argv)
    if args.quick:
        args.image_size, args.batch, args.iters = 64, 2, 2
    work = Path(args.out).parent / "gpu_benchmark_work"
    work.mkdir(parents=True, exist_ok=True)
    cuda = args.device.startswith("cuda")
    name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = args.peak_tflops or next((v for k, v in PEAKS.items() if k in name), None)
    result = {"device": name, "torch": torch.__version__, "quick": args.quick,
              "bf16_peak_tflops": peak, "densevlm": {}}  # fmt: skip

    def save(section, value):  # after every section: a run cut short keeps what it measured
        result[section] = value
        print(json.dumps({section: value}), flush=True)
        with atomic_write(args.out, binary=False) as f:
            json.dump(result, f, indent=1)

    for precision in ["float16", "bfloat16"] if cuda else ["float32"]:
        r = densevlm_train(args, work, precision, args.batch)
        if peak:
            r["utilisation_of_bf16_peak"] = r["flops_per_image"] * r["images_per_s"] / (peak * 1e12)
        save("densevlm", {**result["densevlm"], precision: r})
    if cuda and "largest" not in args.skip:
        largest = largest_batch(args, work, "bfloat16", args.batch * 2)
        save("densevlm", {**result["densevlm"], "largest_bfloat16": largest})
    if "eval" not in args.skip:
        save("region_eval", region_eval(args))
    if "fvit" not in args.skip:
        save("fvit", fvit(args))
    save("mapper_images_per_s", mapper_speed(args, work))
    return result


if __name__ == "__main__":
    main()
