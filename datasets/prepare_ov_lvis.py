#!/usr/bin/env python
"""Write the OV-LVIS training file (rare classes' annotations removed) from the official LVIS v1
training json.

    python datasets/prepare_ov_lvis.py            # under $DETECTRON2_DATASETS (default: datasets/)

reads  lvis/lvis_v1_train.json
writes lvis/lvis_v1_train_seen_1203_cat.json  (all 1,203 categories, no rare annotations)

CLIPSelf publishes a file of the same name with the same content: put it in lvis/ instead, and this
script checks it (1,203 categories with frequency tags, no rare annotation) and writes nothing.
Evaluation reads the official lvis/lvis_v1_val.json as it is; images are COCO 2017's
(coco/train2017, coco/val2017).
"""

import argparse
import os

import densevlm_d2  # noqa: F401
from densevlm_d2.data.datasets.ov_lvis import (
    OV_LVIS_TRAIN_JSON,
    check_ov_lvis_train_json,
    prepare_ov_lvis_train_json,
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=os.getenv("DETECTRON2_DATASETS", "datasets"))
    parser.add_argument(
        "--force", action="store_true", help="rewrite the training file even when one is there"
    )
    args = parser.parse_args(argv)
    lvis = os.path.join(args.root, "lvis")
    out = os.path.join(lvis, OV_LVIS_TRAIN_JSON)
    if os.path.isfile(out) and not args.force:
        counts = check_ov_lvis_train_json(out)
        print(
            f"{out} is already there (CLIPSelf's file or an earlier run) and is valid: {counts}; "
            "nothing written (--force rewrites it from lvis_v1_train.json)"
        )
        return
    src = os.path.join(lvis, "lvis_v1_train.json")
    if not os.path.isfile(src):
        raise SystemExit(
            f"missing {src}: unzip LVIS v1's lvis_v1_train.json.zip there (or put CLIPSelf's "
            f"{OV_LVIS_TRAIN_JSON} in {lvis})"
        )
    counts = prepare_ov_lvis_train_json(src, out)
    print(f"{OV_LVIS_TRAIN_JSON}: {counts}")
    val = os.path.join(lvis, "lvis_v1_val.json")
    if not os.path.isfile(val):
        print(f"note: {val} is missing (evaluation reads it as LVIS publishes it)")


if __name__ == "__main__":
    main()
