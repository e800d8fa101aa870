#!/usr/bin/env python
"""Build ADE20K panoptic annotations from ADEChallengeData2016 and its instance annotations.

    python datasets/prepare_ade20k_panoptic.py             # $DETECTRON2_DATASETS or ./datasets
    python datasets/prepare_ade20k_panoptic.py --splits val train --root /data

Writes ADEChallengeData2016/ade20k_panoptic_{val,train}.json and ade20k_panoptic_{val,train}/*.png.
See densevlm_d2/data/datasets/prepare_ade20k.py for the conventions.
"""

import argparse
import os

from densevlm_d2.data.datasets.prepare_ade20k import prepare_ade20k_panoptic


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--root",
        default=os.getenv("DETECTRON2_DATASETS", "datasets"),
        help="folder that holds ADEChallengeData2016/",
    )
    parser.add_argument("--splits", nargs="+", default=["val"], choices=["val", "train"])
    args = parser.parse_args(argv)
    for split in args.splits:
        path = prepare_ade20k_panoptic(os.path.join(args.root, "ADEChallengeData2016"), split)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
