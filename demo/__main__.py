"""``make demo`` (``python -m demo``): DenseVLM end to end on the CPU, in a small world that ships
with the project.

Builds the world, pretrains a small CLIP on captions (the foreground-biased student) and a teacher
on named region crops, fine-tunes the student with CLIPSelf and with DenseVLM through
tools/train_net.py, does the same with DenseVLM for a second student family (a SigLIP-style CLIP:
attention-pooled, sigmoid loss), evaluates the six models and draws the results. Stages are cached
in --demo-dir; a second run only re-evaluates and redraws (--rebuild starts over).
"""

import argparse

from .pipeline import DemoConfig, run_demo


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--demo-dir", default="output/demo")
    parser.add_argument("--rebuild", action="store_true", help="recompute every stage")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a much smaller world and schedule (a smoke run, not meaningful)",
    )
    args = parser.parse_args(argv)
    cfg = DemoConfig()
    if args.quick:
        cfg = DemoConfig(
            num_train=96,
            num_val=16,
            student_epochs=1,
            teacher_epochs=1,
            finetune_iters=3,
            teacher_refine_iters=2,
        )
    return run_demo(args.demo_dir, cfg, rebuild=args.rebuild)


if __name__ == "__main__":
    main()
