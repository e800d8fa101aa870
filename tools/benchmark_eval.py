#!/usr/bin/env python
r"""Speed of the region-classification evaluation: images/s and peak memory of the whole loop
(loading, preprocessing, dense features, pooling, scoring), as ``train_net.py --eval-only`` runs it.

    # on N synthetic COCO-panoptic images (the demo world's scenes at 360-640 px; no dataset
    # needed), random EVA02-CLIP-B/16 at 512 px
    python tools/benchmark_eval.py --synthetic 20
    # on a registered dataset, with a checkpoint
    python tools/benchmark_eval.py --dataset densevlm_coco_panoptic_val --max-images 200 \
        --weights EVA02_CLIP_B_psz16_s8B.pt --batch 8

Peak memory is the CUDA allocator's peak on a GPU, the process's peak RSS on the CPU.
"""

import densevlm_d2  # first: its import silences fvcore's import warnings before detectron2's

# isort: split

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import inference_on_dataset

from densevlm_d2.data import dataset_vocabulary
from densevlm_d2.data.datasets import register_panoptic
from densevlm_d2.engine import CLIPCheckpointer, Trainer
from densevlm_d2.utils.registration import add_register_argument, run_register_files

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "eval" / "coco_panoptic_eva02_b16.yaml"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", default=str(CONFIG))
    parser.add_argument("--synthetic", type=int, default=0, help="use N synthetic images")
    parser.add_argument("--dataset", default="densevlm_coco_panoptic_val")
    parser.add_argument("--max-images", type=int, default=0, help="0: the whole dataset")
    parser.add_argument(
        "--weights", default="", help="CLIP or detectron2 checkpoint (default: random)"
    )
    parser.add_argument("--batch", type=int, default=4, help="images per forward")
    parser.add_argument("--types", nargs="+", default=["rois", "maskpool"])
    parser.add_argument(
        "--text-embeddings",
        default="",
        help=".npy class embeddings (default: random ones when --weights is not "
        "given, since speed does not depend on them; else the text classifier)",
    )
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_register_argument(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    run_register_files(args.register)

    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.DEVICE = args.device
    cfg.TEST.REGIONS.IMS_PER_BATCH = args.batch
    cfg.TEST.REGIONS.TYPES = args.types
    cfg.DATALOADER.NUM_WORKERS = args.workers
    cfg.OUTPUT_DIR = tempfile.mkdtemp(prefix="benchmark_eval_")
    name = args.dataset
    if args.synthetic:
        sys.path.insert(0, str(ROOT))  # the demo (a top-level folder of the checkout) draws them
        from demo.register import CATEGORIES
        from demo.world import WorldSpec, write_world

        root = Path(cfg.OUTPUT_DIR) / "synthetic"
        write_world(str(root), WorldSpec(num_train=0, num_val=args.synthetic, size=(360, 640)))
        name = "benchmark_synthetic_world"
        register_panoptic(
            name,
            CATEGORIES,
            str(root / "val"),
            str(root / "panoptic_val"),
            str(root / "panoptic_val.json"),
            layout="",
        )
    if args.max_images:  # the first N images, under a name of their own with the same metadata
        full, meta = DatasetCatalog.get(name), MetadataCatalog.get(name).as_dict()
        name = f"{name}_first{args.max_images}"
        DatasetCatalog.register(name, lambda: full[: args.max_images])
        MetadataCatalog.get(name).set(**{k: v for k, v in meta.items() if k != "name"})
    cfg.DATASETS.TEST = (name,)

    model = Trainer.build_model(cfg)
    text_file = args.text_embeddings
    if not text_file and not args.weights:
        dim = model.backbone.output_shape()["dense"].channels
        text_file = os.path.join(cfg.OUTPUT_DIR, "random_classes.npy")
        rng = np.random.default_rng(0)
        np.save(text_file, rng.normal(size=(len(dataset_vocabulary(name)), dim)).astype("f4"))
    if text_file:  # this CLIP's precomputed class embeddings of the dataset
        model.backbone.text_embeddings_files[name] = text_file
    CLIPCheckpointer(model).resume_or_load(args.weights, resume=False)
    loader = Trainer.build_test_loader(cfg, name)
    evaluator = Trainer.build_evaluator(cfg, name, output_folder=cfg.OUTPUT_DIR)
    num_images = len(loader.dataset)
    model.class_embeddings(name)  # built (or read) once, not timed
    if model.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    inference_on_dataset(model, loader, evaluator)
    seconds = time.perf_counter() - t0
    if model.device.type == "cuda":
        mem = f"peak CUDA memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
    else:
        mem = f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    print(
        f"{cfg.MODEL.CLIP.MODEL_NAME} {cfg.INPUT.REGIONS.IMAGE_SIZE}px {'+'.join(args.types)} "
        f"batch {args.batch} on {args.device} ({torch.get_num_threads()} threads): "
        f"{num_images} images in {seconds:.1f} s = {num_images / seconds:.2f} images/s, {mem}"
    )
    return num_images / seconds


if __name__ == "__main__":
    main()
