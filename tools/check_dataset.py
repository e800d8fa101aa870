#!/usr/bin/env python
"""Validate registered datasets completely before a long run: every json entry, image, panoptic
PNG and semantic label file is read and checked; every problem is listed with its file, image id
and segment.

    python tools/check_dataset.py densevlm_coco_panoptic_val densevlm_ade20k_panoptic_val
    python tools/check_dataset.py densevlm_ade20k_150_val_sem_seg

Every dataset named is checked and reported, also after one that cannot be loaded at all (missing
files); the exit status is 1 when any has a problem. Datasets live under $DETECTRON2_DATASETS (see
datasets/README.md).
"""

import densevlm_d2  # noqa: F401  (first: silences fvcore's import warnings before detectron2)

# isort: split

import argparse
import sys

from detectron2.data import DatasetCatalog

from densevlm_d2.data.check import check_dataset
from densevlm_d2.utils.registration import add_register_argument, run_register_files


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("datasets", nargs="+", help="registered dataset names")
    parser.add_argument("--no-progress", action="store_true")
    add_register_argument(parser)
    args = parser.parse_args(argv)
    run_register_files(args.register)
    unknown = [n for n in args.datasets if n not in DatasetCatalog.list()]
    if unknown:
        parser.error(
            f"not registered: {unknown}; registered densevlm datasets: "
            + ", ".join(n for n in sorted(DatasetCatalog.list()) if n.startswith("densevlm"))
        )
    failed = []
    for name in args.datasets:  # every dataset is checked, whatever happened to the previous ones
        try:
            report = check_dataset(name, progress=not args.no_progress)
        except (OSError, ValueError) as e:  # missing files, a json that cannot be loaded at all
            print(f"{name}: cannot be loaded: {e}", flush=True)
            failed.append(name)
            continue
        print(report.summary(), flush=True)
        if not report.ok:
            failed.append(name)
    if failed:
        print(f"{len(failed)} of {len(args.datasets)} dataset(s) failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
