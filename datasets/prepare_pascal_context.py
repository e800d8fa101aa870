#!/usr/bin/env python
"""Write PASCAL Context-59, -60 and -459 validation labels from the PASCAL-Context annotations.

    python datasets/prepare_pascal_context.py                # $DETECTRON2_DATASETS or ./datasets
    python datasets/prepare_pascal_context.py --val-list my_val_ids.txt

Reads VOCdevkit/VOC2010/trainval/<id>.mat (LabelMap) and labels.txt (trainval.tar.gz) for the ids of
VOCdevkit/VOC2010/pascalcontext_val.txt (else VOC2010's ImageSets/Main/val.txt); writes
VOCdevkit/VOC2010/annotations_detectron2/pc59_val/*.png (255 ignore), pc60_val/*.png (0 background)
and pc459_val/*.tif (16-bit, 65535 ignore). Needs scipy (pip install scipy).
"""

import os

from densevlm_d2.data.datasets.prepare_sem_seg import preparation_parser, prepare_pascal_context


def main(argv=None):
    parser = preparation_parser(__doc__, "VOCdevkit/VOC2010/")
    parser.add_argument("--val-list", help="file of val image ids, one per line")
    args = parser.parse_args(argv)
    outs = prepare_pascal_context(
        os.path.join(args.root, "VOCdevkit", "VOC2010"),
        val_list=args.val_list,
        progress=not args.no_progress,
    )
    for out in outs.values():
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
