#!/usr/bin/env python
"""Write ADE20K-150 validation labels from ADEChallengeData2016.

    python datasets/prepare_ade20k_sem_seg.py                # $DETECTRON2_DATASETS or ./datasets

Reads ADEChallengeData2016/annotations/validation/*.png (0 void, 1..150); writes
ADEChallengeData2016/annotations_detectron2/validation/*.png (0..149, 255 ignore).
"""

import os

from densevlm_d2.data.datasets.prepare_sem_seg import preparation_parser, prepare_ade20k_150


def main(argv=None):
    parser = preparation_parser(__doc__, "ADEChallengeData2016/")
    args = parser.parse_args(argv)
    out = prepare_ade20k_150(
        os.path.join(args.root, "ADEChallengeData2016"), progress=not args.no_progress
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
