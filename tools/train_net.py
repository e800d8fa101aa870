#!/usr/bin/env python
r"""Train and evaluate densevlm_d2 models through detectron2's launcher.

    # region-classification accuracy of a CLIP checkpoint on COCO panoptic val2017
    python tools/train_net.py --config-file configs/eval/coco_panoptic_eva02_b16.yaml --eval-only \
        MODEL.WEIGHTS checkpoints/EVA02_CLIP_B_psz16_s8B.pt

``--num-gpus N`` starts N processes (N CPU processes with gloo when no GPU is available).
``--dist-timeout SECONDS`` bounds how long the processes wait for each other (30 min by default):
when they cannot meet (a machine rank out of range, an address nobody listens at, a machine that
never comes) the run ends with an error naming the address, the rank, the world size and the
timeout.
``--register my_datasets.py`` runs a file that registers your own datasets (in every process)
before the config is read: see docs/own_data.md.
"""

import densevlm_d2  # first: its import silences fvcore's import warnings before detectron2's

# isort: split

import logging

import torch
from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser, default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from densevlm_d2.engine import CLIPCheckpointer, Trainer, check_run
from densevlm_d2.engine.launch import add_dist_timeout_argument, launch_tool
from densevlm_d2.utils.registration import add_register_argument, run_register_files


def setup(args):
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger("densevlm_d2").warning("no GPU available: running on the CPU")
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="densevlm_d2")
    return cfg


def argument_parser():
    parser = default_argument_parser()
    parser.description = __doc__  # printed as written (detectron2's parser keeps the layout)
    add_register_argument(parser)
    add_dist_timeout_argument(parser)
    return parser


def main(args):
    run_register_files(getattr(args, "register", []))
    cfg = setup(args)
    # weights and evaluation data before any model is built (the Trainer loads its training data
    # before its model)
    check_run(cfg, resume=args.resume)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        CLIPCheckpointer(
            model, save_dir=cfg.OUTPUT_DIR, allow_random_clip=cfg.MODEL.CLIP.RANDOM_INIT
        ).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def parse_args(argv=None):
    parser = argument_parser()
    args = parser.parse_args(argv)
    # detectron2's parser reads everything after the first config option as config options: an
    # option written there (--machine-rank 1 after MODEL...) would be silently lost
    stray = [o for o in args.opts if isinstance(o, str) and o.startswith("--")]
    if stray:
        parser.error(
            f"{stray[0]} comes after the config options (KEY VALUE pairs), where it would be read "
            "as one: put the tool's options first"
        )
    if args.dist_timeout <= 0:
        parser.error(f"--dist-timeout must be positive, got {args.dist_timeout:g}")
    return args


if __name__ == "__main__":
    launch_tool(main, parse_args(), "train_net.py")
