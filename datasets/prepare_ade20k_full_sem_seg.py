#!/usr/bin/env python
"""Write ADE20K-847 validation images and labels from the full ADE20K release.

    python datasets/prepare_ade20k_full_sem_seg.py           # $DETECTRON2_DATASETS or ./datasets

Reads ADE20K_2021_17_01/index_ade20k.pkl and its images/ADE/validation/**/ADE_val_*.jpg and
*_seg.png; writes ADE20K_2021_17_01/images_detectron2/validation/*.jpg (shorter side at most 512)
and annotations_detectron2/validation/*.tif (16-bit, 847 classes, 65535 ignore), as
Mask2Former's and CAT-Seg's preparation does.
"""

import os

from densevlm_d2.data.datasets.prepare_sem_seg import preparation_parser, prepare_ade20k_847


def main(argv=None):
    parser = preparation_parser(__doc__, "ADE20K_2021_17_01/")
    args = parser.parse_args(argv)
    outs = prepare_ade20k_847(
        os.path.join(args.root, "ADE20K_2021_17_01"), progress=not args.no_progress
    )
    for out in outs:
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
