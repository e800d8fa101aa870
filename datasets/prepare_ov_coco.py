#!/usr/bin/env python
"""Write the OV-COCO detection files (48 base / 17 novel classes) from COCO 2017's instances files.

    python datasets/prepare_ov_coco.py            # under $DETECTRON2_DATASETS (default: datasets/)

reads  coco/annotations/instances_{train,val}2017.json
writes coco/annotations/instances_train2017_ovcoco_base.json  (65 categories, base-class boxes only)
       coco/annotations/instances_val2017_ovcoco.json         (65 categories, all their boxes)

The published F-ViT files (instances_train2017_seen_2_65_cat.json, instances_val2017_all_2.json)
hold the same categories in the same order and can be used instead (rename or symlink them).
"""

import argparse
import os

import densevlm_d2  # noqa: F401
from densevlm_d2.data.datasets.ov_coco import prepare_ov_coco_json


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=os.getenv("DETECTRON2_DATASETS", "datasets"))
    args = parser.parse_args(argv)
    ann = os.path.join(args.root, "coco", "annotations")
    for src, dst, keep in (
        ("instances_train2017.json", "instances_train2017_ovcoco_base.json", "base"),
        ("instances_val2017.json", "instances_val2017_ovcoco.json", "all"),
    ):
        src_path = os.path.join(ann, src)
        if not os.path.isfile(src_path):
            raise SystemExit(f"missing {src_path}: unzip COCO's annotations_trainval2017.zip there")
        counts = prepare_ov_coco_json(src_path, os.path.join(ann, dst), keep)
        print(f"{dst}: {counts}")


if __name__ == "__main__":
    main()
