#!/usr/bin/env python
r"""Open-vocabulary prediction of one image: training-free dense segmentation (SCLIP's protocol,
configs/sem_seg/Base-DenseSeg.yaml) drawn with a legend, and optionally the classes of one box.
The same functions as the app's (densevlm_d2.predictor, densevlm_d2.visualization).

    python tools/predict.py --model EVA02-CLIP-B-16 \
        --checkpoint densevlm_coco_6_save6_512_eva_vib16_12layers.pt --image street.jpg \
        --vocabulary "car, road, sky, building, tree, person" --output street_dense.png

    python tools/predict.py --model densevlm-eva02-b16 --box 10,20,200,180 ...   # a zoo name

--random-init instead of --checkpoint runs a randomly initialised model: the picture is then marked
as such (it shows the pipeline working, not a prediction).
"""

from __future__ import annotations

import argparse
import difflib
import logging
import sys
import time
import warnings
from pathlib import Path

from PIL import Image

import densevlm_d2
from densevlm_d2.clip.hub import check_weights_reference, zoo_entry
from densevlm_d2.clip.preprocess import load_rgb
from densevlm_d2.clip.vocabulary import VocabularyError
from densevlm_d2.utils.registration import add_register_argument, run_register_files

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = Path(densevlm_d2.__file__).parent / "assets" / "chelsea.jpg"
DEFAULT_VOCABULARY = "cat, wall, floor, blanket, sky, grass, tree, person"
DEFAULT_CONFIG = ROOT / "configs" / "sem_seg" / "Base-DenseSeg.yaml"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        default="EVA02-CLIP-B-16",
        help="an architecture (" + ", ".join(densevlm_d2.available_models()) + ") or a zoo name",
    )
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument(
        "--checkpoint", default=None, help="EVA-CLIP, DenseVLM/CLIPSelf or open_clip checkpoint"
    )
    weights.add_argument(
        "--random-init",
        action="store_true",
        help="no weights: a randomly initialised model (shows the pipeline, not a prediction)",
    )
    parser.add_argument("--image", default=str(DEFAULT_IMAGE))
    parser.add_argument(
        "--vocabulary",
        default=DEFAULT_VOCABULARY,
        help="comma-separated class names (a class may end with [thing] or [stuff])",
    )
    parser.add_argument("--box", default=None, help="x0,y0,x1,y1: also print this box's top-5")
    parser.add_argument(
        "--config", default=str(DEFAULT_CONFIG), help="the segmentation protocol's config"
    )
    parser.add_argument(
        "--short-side", type=int, default=None, help="MODEL.DENSE_SEG.SHORT_SIDE (default 336)"
    )
    parser.add_argument(
        "--window", type=int, default=None, help="MODEL.DENSE_SEG.WINDOW (default 224)"
    )
    parser.add_argument("--output", default="output/predict/dense_prediction.png")
    parser.add_argument("--device", default="cpu")
    add_register_argument(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("densevlm_d2").setLevel(logging.INFO)

    # the cheap checks first: the image, the vocabulary, the weights' presence
    try:
        image = load_rgb(args.image, "--image")
    except OSError as e:
        parser.error(str(e))
    from densevlm_d2.predictor import as_vocabulary
    from densevlm_d2.visualization import draw_segmentation

    try:
        vocabulary = as_vocabulary(args.vocabulary)
    except VocabularyError as e:
        parser.error(f"--vocabulary: {e}")
    box = None
    if args.box:
        try:
            box = [float(v) for v in args.box.split(",")]
            assert len(box) == 4
        except (ValueError, AssertionError):
            parser.error(f"--box takes x0,y0,x1,y1 (pixels), got {args.box!r}")
    run_register_files(args.register)  # a registered model is a known model
    entry = zoo_entry(args.model)
    if entry is None and args.model not in densevlm_d2.available_models():
        close = difflib.get_close_matches(args.model, densevlm_d2.available_models(), n=2)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        parser.error(f"--model {args.model!r}: unknown model{hint} (see --help for the list)")
    model, checkpoint = (entry.model, entry.name) if entry else (args.model, args.checkpoint)
    if not entry and not checkpoint and not args.random_init:
        parser.error("give --checkpoint (or a model-zoo name as --model), or --random-init")
    if args.checkpoint:
        try:
            check_weights_reference(args.checkpoint)
        except (FileNotFoundError, ValueError) as e:
            parser.error(f"--checkpoint {args.checkpoint}: {e}")

    opts = ["MODEL.CLIP.MODEL_NAME", model]
    if args.random_init:
        opts += ["MODEL.CLIP.RANDOM_INIT", "True"]
        print(
            f"NOTE: no --checkpoint: {model} is RANDOMLY INITIALISED; the prediction below is "
            "meaningless and only shows the pipeline running end to end."
        )
        # the backbone's own warning says the same
        warnings.filterwarnings("ignore", r"CLIPViTBackbone\(.*\) has no checkpoint", UserWarning)
    for key, value in (("SHORT_SIDE", args.short_side), ("WINDOW", args.window)):
        if value is not None:
            opts += [f"MODEL.DENSE_SEG.{key}", str(value)]
    if args.window is not None:
        opts += ["MODEL.DENSE_SEG.STRIDE", str(max(1, args.window // 2))]
    t0 = time.perf_counter()
    from densevlm_d2.predictor import OpenVocabPredictor

    predictor = OpenVocabPredictor.from_config(
        args.config, checkpoint=checkpoint, opts=opts, device=args.device, name=model
    )
    print(f"[1/3] built {model} in {time.perf_counter() - t0:.1f}s")
    result = predictor.segment(image, vocabulary)
    print(
        f"[2/3] text embeddings of {len(vocabulary)} classes in {result.seconds['text']:.1f}s; "
        f"[3/3] dense prediction of {args.image} ({image.width}x{image.height}) in "
        f"{result.seconds['image']:.1f}s"
    )
    shares = result.shares()
    names = vocabulary.display_names
    for i in shares.argsort(descending=True)[:5].tolist():
        print(f"    {names[i]:>12s}: {100 * shares[i]:5.1f}% of pixels")
    kinds = result.kind_shares()
    if kinds is not None:
        print(f"    things {100 * kinds['thing']:.1f}%, stuff {100 * kinds['stuff']:.1f}%")
    if box is not None:
        query = predictor.query_box(image, box, vocabulary)
        print(f"box {args.box}: " + ", ".join(f"{n} {100 * p:.1f}%" for n, p in query.top(5)))
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    picture = draw_segmentation(
        image,
        result.labels,
        names,
        title=f"{model} ({args.image})",
        random_weights=args.random_init,
    )
    Image.fromarray(picture).save(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
