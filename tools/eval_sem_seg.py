#!/usr/bin/env python
r"""Training-free semantic segmentation of CLIP checkpoints on every benchmark, as one table.

    python tools/eval_sem_seg.py --clip eva02_b16 --weights zoo://densevlm-eva02-b16
    python tools/eval_sem_seg.py --clip eva02_b16 --weights eva02-clip-b16 \
        --weights path/to/clipself_eva02_b16.pt --weights densevlm-eva02-b16
    python tools/eval_sem_seg.py --clip openai_b16 --weights openai-vit-b16 \
        --benchmarks voc21 ade20k_150
    python tools/eval_sem_seg.py --clip eva02_b16 --weights model_final.pth --num-gpus 8

Runs ``configs/sem_seg/<clip>/<benchmark>.yaml`` for each benchmark and checkpoint with one model
(built once; each checkpoint is loaded into it), writes each run's metrics to
``<output-dir>/<checkpoint>/<benchmark>/inference/<dataset>/sem_seg_metrics.json`` and the table
(mIoU %, a row per checkpoint) to ``<output-dir>/summary.{md,json}``. Trailing ``KEY VALUE`` pairs
override config keys for every benchmark. A benchmark whose data is missing is reported in the
table as n/a and skipped (``--strict``: stop instead).
"""

from __future__ import annotations

import densevlm_d2  # first: its import silences fvcore's import warnings before detectron2's

# isort: split

import argparse
import json
import logging
import os
import re
from pathlib import Path

import torch
from detectron2.config import get_cfg
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from densevlm_d2.data.datasets.panoptic import DatasetLayoutError
from densevlm_d2.engine import CLIPCheckpointer, Trainer
from densevlm_d2.engine.launch import add_dist_timeout_argument, launch_tool
from densevlm_d2.engine.preflight import check_weights
from densevlm_d2.modeling.meta_arch import CLIPDenseSegmenter
from densevlm_d2.utils.registration import add_register_argument, run_register_files

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "sem_seg"
#: table order: the training-free literature's eight, then the two large vocabularies
BENCHMARKS = (
    "voc21",
    "context60",
    "coco_object",
    "voc20",
    "context59",
    "coco_stuff_171",
    "ade20k_150",
    "ade20k_847",
    "context459",
)


def benchmark_config(clip: str, benchmark: str, opts):
    path = CONFIG_DIR / clip / f"{benchmark}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no config {path} (CLIPs: {sorted(_clips())})")
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.merge_from_file(str(path))
    cfg.merge_from_list(list(opts))
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


def _clips() -> list[str]:
    return [p.name for p in CONFIG_DIR.iterdir() if p.is_dir()]


def format_table(rows: dict[str, dict[str, float | str]]) -> str:
    """Markdown: one row per checkpoint, one column per benchmark."""
    benches = list(next(iter(rows.values())))
    lines = ["| weights | " + " | ".join(benches) + " |", "|---|" + "---:|" * len(benches)]
    for weights, row in rows.items():
        cells = [f"{row[b]:.1f}" if isinstance(row[b], float) else row[b] for b in benches]
        lines.append(f"| {weights} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def weights_label(weights: str) -> str:
    """A folder name for a checkpoint reference."""
    if not weights:
        return "random-init"
    name = weights.rstrip("/").split("/")[-1].split("://")[-1]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def evaluate_weights(model, weights: str, cfgs: dict, args, logger) -> dict[str, float | str]:
    """Load ``weights`` into the model's CLIP and run every benchmark; {benchmark: mIoU or n/a}."""
    first = next(iter(cfgs.values()))
    out_dir = os.path.join(args.output_dir, weights_label(weights))
    CLIPCheckpointer(
        model, save_dir=out_dir, allow_random_clip=first.MODEL.CLIP.RANDOM_INIT
    ).resume_or_load(weights, resume=False)
    row: dict[str, float | str] = {}
    for bench, cfg in cfgs.items():
        cfg = cfg.clone()
        cfg.defrost()
        cfg.OUTPUT_DIR = os.path.join(out_dir, bench)
        seg = CLIPDenseSegmenter(
            backbone=model.backbone, **CLIPDenseSegmenter.protocol_from_config(cfg)
        )
        seg.to(model.device).eval()
        try:
            results = Trainer.test(cfg, seg)
        except (DatasetLayoutError, FileNotFoundError) as e:
            if args.strict:
                raise
            logger.warning("%s skipped: %s", bench, e)
            row[bench] = "n/a"
            continue
        if comm.is_main_process():
            row[bench] = float(results["sem_seg"]["mIoU"])
    return row


def main(args) -> dict:
    logger = logging.getLogger("densevlm_d2")
    run_register_files(args.register)
    cfgs = {b: benchmark_config(args.clip, b, args.opts) for b in args.benchmarks}
    first = next(iter(cfgs.values()))
    # the weights before the model is built (a benchmark without data is reported as n/a later)
    check_weights(first, weights=args.weights or [""], weights_option="--weights")
    setup_cfg = first.clone()
    setup_cfg.defrost()
    setup_cfg.OUTPUT_DIR = args.output_dir
    default_setup(setup_cfg, argparse.Namespace(config_file="", eval_only=True, **vars(args)))
    setup_logger(output=args.output_dir, distributed_rank=comm.get_rank(), name="densevlm_d2")
    model = Trainer.build_model(first)  # built once; each checkpoint is loaded into it
    weights = args.weights or [""]
    rows = {w or "random-init": evaluate_weights(model, w, cfgs, args, logger) for w in weights}
    if comm.is_main_process():
        table = format_table(rows)
        print(f"\nmIoU (%), {args.clip}:\n{table}")
        out = Path(args.output_dir)
        (out / "summary.md").write_text(f"mIoU (%), configs/sem_seg/{args.clip}\n\n{table}\n")
        summary = {"clip": args.clip, "mIoU": rows}
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return rows


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clip", required=True, help="a folder of configs/sem_seg/")
    parser.add_argument(
        "--weights",
        action="append",
        help="a checkpoint (file, hf:// reference or model-zoo name); repeat it to compare "
        "several, one row each. Without it: the config's MODEL.CLIP.CHECKPOINT, which the shipped "
        "configs leave empty, so the tool stops unless given weights; random weights only with "
        "the override MODEL.CLIP.RANDOM_INIT True (a smoke run)",
    )
    parser.add_argument("--benchmarks", nargs="+", default=list(BENCHMARKS), choices=BENCHMARKS)
    parser.add_argument("--output-dir", default="output/sem_seg/table")
    add_register_argument(parser)
    parser.add_argument("--strict", action="store_true", help="stop at a benchmark without data")
    parser.add_argument("--num-gpus", type=int, default=1)
    parser.add_argument("--num-machines", type=int, default=1)
    parser.add_argument("--machine-rank", type=int, default=0)
    parser.add_argument("--dist-url", default="auto")
    add_dist_timeout_argument(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser


if __name__ == "__main__":
    launch_tool(main, argument_parser().parse_args(), "eval_sem_seg.py")
