#!/usr/bin/env python
"""Write PASCAL VOC 2012 validation labels with 20 classes, with 21 (background first) and with 21
(background last, VOC-20b).

    python datasets/prepare_voc.py                           # $DETECTRON2_DATASETS or ./datasets

Reads VOCdevkit/VOC2012/SegmentationClass/*.png for ImageSets/Segmentation/val.txt; writes
VOCdevkit/VOC2012/annotations_detectron2/val/*.png (20 classes, background and boundaries 255),
annotations_detectron2_voc21/val/*.png (0 background, 1..20, boundaries 255) and
annotations_detectron2_bg/val/*.png (0..19 the classes, 20 background, boundaries 255: CAT-Seg's
VOC-20b labels, in its folder).
"""

import os

from densevlm_d2.data.datasets.prepare_sem_seg import preparation_parser, prepare_voc


def main(argv=None):
    parser = preparation_parser(__doc__, "VOCdevkit/VOC2012/")
    args = parser.parse_args(argv)
    outs = prepare_voc(
        os.path.join(args.root, "VOCdevkit", "VOC2012"), progress=not args.no_progress
    )
    for out in outs:
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
