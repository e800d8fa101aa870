#!/usr/bin/env python
r"""Convert a CLIP checkpoint between the EVA-CLIP release layout and upstream open_clip's.

The input (EVA-CLIP, DenseVLM/CLIPSelf release or open_clip layout, possibly under ``state_dict``
and with ``module.`` prefixes) is loaded strictly into the named architecture, then written in the
requested layout:

    python tools/convert_checkpoint.py --model EVA02-CLIP-B-16 \
        --input densevlm_coco_6_save6_512_eva_vib16_12layers.pt \
        --output densevlm_b16_open_clip.pt --to open_clip
"""

import argparse

import torch

import densevlm_d2

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", required=True, help=f"one of {', '.join(densevlm_d2.available_models())}"
    )
    parser.add_argument("--input", required=True, help="checkpoint to read")
    parser.add_argument("--output", required=True, help="file to write (atomically)")
    parser.add_argument(
        "--to", required=True, choices=[f.value for f in densevlm_d2.CheckpointFormat]
    )
    parser.add_argument(
        "--dtype",
        default="fp32",
        choices=sorted(DTYPES),
        help="floating-point type of the written tensors (fp32 is exact for any input)",
    )
    args = parser.parse_args(argv)

    model = densevlm_d2.build_clip_model(args.model)
    fmt = densevlm_d2.load_checkpoint(model, args.input)
    path = densevlm_d2.save_checkpoint(model, args.output, args.to, dtype=DTYPES[args.dtype])
    print(f"{args.input} ({fmt.value} layout) -> {path} ({args.to} layout, {args.dtype})")


if __name__ == "__main__":
    main()
