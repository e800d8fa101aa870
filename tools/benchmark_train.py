#!/usr/bin/env python
r"""Training speed: images/s and peak memory of full training iterations (data loading, student
and teacher forward, loss, backward, optimiser step) through this project's trainer.

    # the published DenseVLM setting: student EVA02-CLIP-B/16, teacher EVA02-CLIP-L/14-336, 512 px
    python tools/benchmark_train.py --batch 16 --precision bfloat16          # on a GPU
    # something that fits a laptop CPU
    python tools/benchmark_train.py --student EVA02-CLIP-B-16 --teacher EVA02-CLIP-B-16 \
        --image-size 224 --batch 2 --iters 3

Weights and class embeddings are random (speed does not depend on them); the images are synthetic
(640 x 480). Peak memory is the CUDA allocator's peak on a GPU, the process's peak RSS on the CPU.
"""

import densevlm_d2  # first: its import silences fvcore's import warnings before detectron2's

# isort: split

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from detectron2.config import get_cfg
from detectron2.utils.events import EventStorage
from PIL import Image

from densevlm_d2.clip.models import embed_dim_of
from densevlm_d2.data.datasets.coco_boxes import register_image_folder
from densevlm_d2.engine import Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "coco"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--method", default="densevlm", choices=["densevlm", "clipself", "regionclip"]
    )
    parser.add_argument("--student", default="EVA02-CLIP-B-16")
    parser.add_argument("--teacher", default="EVA02-CLIP-L-14-336")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2, help="images per iteration (one process)")
    parser.add_argument("--iters", type=int, default=3, help="timed iterations after one warm-up")
    parser.add_argument(
        "--precision", default="float32", choices=["float32", "float16", "bfloat16"]
    )
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.method == "regionclip":
        parser.error("regionclip needs pseudo-labelled boxes; benchmark densevlm or clipself")

    work = Path(tempfile.mkdtemp(prefix="benchmark_train_"))
    images = work / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(max(8, args.batch * 2)):
        Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(
            images / f"{i:06d}.jpg"
        )
    register_image_folder("benchmark_train_images", str(images), layout="")

    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.merge_from_file(str(CONFIGS / f"{args.method}_eva02_b16.yaml"))
    cfg.MODEL.DEVICE = args.device
    cfg.MODEL.CLIP.MODEL_NAME = args.student
    cfg.MODEL.CLIP.CHECKPOINT = ""
    cfg.MODEL.CLIP.RANDOM_INIT = True  # speed does not depend on the weights
    cfg.INPUT.REGIONS.IMAGE_SIZE = args.image_size
    cfg.MODEL.DENSEVLM.TEACHER.MODEL_NAME = args.teacher
    cfg.MODEL.DENSEVLM.TEACHER.CHECKPOINT = ""
    vocabulary = cfg.MODEL.DENSEVLM.VOCABULARY
    names = densevlm_d2.dataset_vocabulary(vocabulary).names
    for node, model in ((cfg.MODEL.CLIP, "student"), (cfg.MODEL.DENSEVLM.TEACHER, "teacher")):
        path = work / f"{model}_text.npy"
        size = (len(names), embed_dim_of(node.MODEL_NAME))
        np.save(path, rng.normal(size=size).astype(np.float32))
        node.TEXT_EMBEDDINGS = [[vocabulary, str(path)]]
    cfg.DATASETS.TRAIN = ("benchmark_train_images",)
    cfg.DATASETS.TEST = ()
    cfg.SOLVER.IMS_PER_BATCH = args.batch
    cfg.SOLVER.AMP.ENABLED = args.precision != "float32"
    cfg.SOLVER.AMP.PRECISION = args.precision if args.precision != "float32" else "float16"
    cfg.SOLVER.EXPORT_CLIP = False
    cfg.DATALOADER.NUM_WORKERS = args.workers
    cfg.OUTPUT_DIR = str(work / "out")
    os.environ.setdefault("DENSEVLM_CACHE", str(work / "cache"))

    trainer = Trainer(cfg)
    cuda = args.device.startswith("cuda")
    with EventStorage(0) as storage:
        trainer.iter = 0
        trainer.storage = storage
        trainer._trainer.iter, trainer._trainer.storage = 0, storage
        trainer._trainer.run_step()  # warm-up
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for i in range(1, args.iters + 1):
            trainer._trainer.iter = i
            storage.iter = i
            trainer._trainer.run_step()
        if cuda:
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / args.iters
    if cuda:
        mem = f"peak CUDA memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
    else:
        mem = f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB"
    print(
        f"{args.method}: student {args.student}, teacher {args.teacher}, {args.image_size}px, "
        f"batch {args.batch}, {args.precision} on {args.device} "
        f"({torch.get_num_threads()} threads): {seconds:.2f} s/iteration = "
        f"{args.batch / seconds:.2f} images/s, {mem}"
    )


if __name__ == "__main__":
    main()
