#!/usr/bin/env python
r"""Dense open-vocabulary prediction: every token of a CLIP ViT classified against a vocabulary,
drawn with detectron2's Visualizer.

    python tools/predict.py --model EVA02-CLIP-B-16 \
        --checkpoint densevlm_coco_6_save6_512_eva_vib16_12layers.pt --image street.jpg \
        --vocabulary "car, road, sky, building, tree, person" --output street_dense.png

--random-init instead of --checkpoint runs a randomly initialised model: the drawing then shows the
pipeline working, not a meaningful prediction.
"""

import argparse
import difflib
import logging
import time
import warnings
from pathlib import Path

from PIL import Image

import densevlm_d2
from densevlm_d2.clip.hub import check_weights_reference, zoo_entry
from densevlm_d2.clip.preprocess import load_rgb
from densevlm_d2.utils.registration import add_register_argument, run_register_files
from densevlm_d2.visualization import dense_prediction, draw_dense_prediction

DEFAULT_IMAGE = Path(densevlm_d2.__file__).parent / "assets" / "chelsea.jpg"
DEFAULT_VOCABULARY = "cat, wall, floor, blanket, sky, grass, tree, person"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        default="EVA02-CLIP-B-16",
        help="one of " + ", ".join(densevlm_d2.available_models()),
    )
    weights = parser.add_mutually_exclusive_group(required=True)
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
        "--vocabulary", default=DEFAULT_VOCABULARY, help="comma-separated class names"
    )
    parser.add_argument(
        "--image-size", type=int, default=512, help="preprocessing canvas (published: 512)"
    )
    parser.add_argument("--output", default="output/demo/dense_prediction.png")
    parser.add_argument("--device", default="cpu")
    add_register_argument(parser)
    args = parser.parse_args(argv)
    run_register_files(args.register)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("densevlm_d2").setLevel(logging.INFO)

    names = [n.strip() for n in args.vocabulary.split(",") if n.strip()]
    if not names:
        parser.error("--vocabulary names no classes")
    # the cheap checks first: the image and the model's name, before building and embedding
    try:
        image = load_rgb(args.image, "--image")
    except OSError as e:
        parser.error(str(e))
    if zoo_entry(args.model) is None and args.model not in densevlm_d2.available_models():
        close = difflib.get_close_matches(args.model, densevlm_d2.available_models(), n=2)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        parser.error(f"--model {args.model!r}: unknown model{hint} (see --help for the list)")
    if args.checkpoint:
        try:
            check_weights_reference(args.checkpoint)
        except (FileNotFoundError, ValueError) as e:
            parser.error(f"--checkpoint {args.checkpoint}: {e}")
    if args.random_init:
        print(
            f"NOTE: no --checkpoint: {args.model} is RANDOMLY INITIALISED; the prediction below "
            "is meaningless and only shows the pipeline running end to end."
        )
        # the backbone's own warning says the same
        warnings.filterwarnings("ignore", r"CLIPViTBackbone\(.*\) has no checkpoint", UserWarning)
    t0 = time.time()
    encoder = densevlm_d2.load_clip(
        args.model,
        args.checkpoint,
        image_size=args.image_size,
        device=args.device,
        random_init=args.random_init,
    )
    print(f"[1/3] built {args.model} in {time.time() - t0:.1f}s")
    t0 = time.time()
    classifier = encoder.text_embeddings(names)
    print(
        f"[2/3] text embeddings of {len(names)} classes x 63 templates in {time.time() - t0:.1f}s"
    )
    t0 = time.time()
    labels = dense_prediction(encoder, image, classifier)
    print(
        f"[3/3] dense prediction of {args.image} ({image.width}x{image.height}) "
        f"in {time.time() - t0:.1f}s"
    )
    counts = labels.flatten().bincount(minlength=len(names)).float() / labels.numel()
    for i in counts.argsort(descending=True)[:5].tolist():
        print(f"    {names[i]:>12s}: {100 * counts[i]:5.1f}% of pixels")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(draw_dense_prediction(image, labels, names)).save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
