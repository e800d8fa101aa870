#!/usr/bin/env python
"""Write COCO-Stuff-171 and COCO-Object labels from COCO-Stuff's stuffthingmaps.

    python datasets/prepare_coco_stuff_sem_seg.py            # $DETECTRON2_DATASETS or ./datasets
    python datasets/prepare_coco_stuff_sem_seg.py --splits val2017 --root /data

Reads coco/stuffthingmaps/{val2017,train2017}/*.png (stuffthingmaps_trainval2017.zip); writes
coco/stuffthingmaps_detectron2/<split>/*.png (171 classes, 255 ignore) and
coco/coco_object_detectron2/val2017/*.png (0 background, 1..80 things). See
densevlm_d2/data/datasets/prepare_sem_seg.py for the conventions.
"""

import os

from densevlm_d2.data.datasets.prepare_sem_seg import preparation_parser, prepare_coco_stuff


def main(argv=None):
    parser = preparation_parser(__doc__, "coco/")
    parser.add_argument(
        "--splits",
        nargs="+",
        default=["val2017", "train2017"],
        choices=["val2017", "train2017"],
        help="COCO-Stuff-171 splits",
    )
    parser.add_argument(
        "--coco-object-splits",
        nargs="*",
        default=["val2017"],
        choices=["val2017", "train2017"],
        help="COCO-Object splits (none: skip COCO-Object)",
    )
    args = parser.parse_args(argv)
    outs = prepare_coco_stuff(
        os.path.join(args.root, "coco"),
        args.splits,
        args.coco_object_splits,
        progress=not args.no_progress,
    )
    for out in outs:
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
