#!/usr/bin/env python
"""Draw training curves from detectron2's metrics.json: one run, or several overlaid to compare.

    python tools/plot_curves.py output/densevlm_coco_eva02_b16                # -> <run>/curves.png
    python tools/plot_curves.py mine=output/my_run reference=docs/curves/demo_densevlm.json \\
        --out compare.png

Each RUN is a training output folder or a metrics.json, optionally named ``label=path`` (default
label: the folder's name). Panels: the losses, the learning rate, and one per group of the other
scalars (``densevlm/...``, evaluation results such as ``sem_seg/...``), against the iteration.
Every run writes its own curves.png when training ends (SOLVER.PLOT_CURVES).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from densevlm_d2.engine.curves import plot_curves


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", metavar="RUN", help="[label=]run folder or metrics.json")
    parser.add_argument("--out", default=None, help="default: <the one run>/curves.png")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    runs = {}
    for run in args.runs:
        label, _, path = run.rpartition("=")
        path = Path(path)
        label = label or (path.parent.name if path.suffix == ".json" else path.name)
        if label in runs:
            parser.error(f"two runs are labelled {label!r}: name them, label=path")
        runs[label] = path
    if args.out is None:
        if len(runs) > 1:
            parser.error("several runs: say where the picture goes (--out compare.png)")
        only = next(iter(runs.values()))
        args.out = (only if only.is_dir() else only.parent) / "curves.png"
    try:
        out = plot_curves(runs, args.out, title=args.title)
    except (FileNotFoundError, ValueError) as e:
        parser.error(str(e))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
