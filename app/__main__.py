"""Serve the app: ``python -m app`` (``make app``), then open http://127.0.0.1:7860.

    python -m app          # the demo's checkpoints (make demo) and cached zoo models
    python -m app --models-dir ~/clip_weights --models-arch EVA02-CLIP-B-16
    python -m app --cat-seg configs/demo/cat_seg.yaml output/cat_seg/model_final.pth

It binds 127.0.0.1 (--host 0.0.0.0 to serve a network, at your own risk), never asks Gradio for a
public share link unless --share is given, reads model files only from the demo folder, the hub
cache and --models-dir, and limits uploads (--max-upload-mb) and image pixels (--max-pixels).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from densevlm_d2.utils.registration import add_register_argument

ASSETS = Path(__file__).resolve().parents[1] / "densevlm_d2" / "assets"
PHOTOS = ("rocket.jpg", "coffee.jpg", "chelsea.jpg", "astronaut.jpg")
GENERIC_VOCABULARY = "person, cat, dog, car, road, sky, building, tree, grass, wall, floor, table"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--demo-dir", default="output/demo", help="where make demo wrote its stages"
    )
    parser.add_argument("--models-dir", default=None, help="a folder of CLIP weight files to offer")
    parser.add_argument(
        "--models-arch",
        default="EVA02-CLIP-B-16",
        help="the architecture of --models-dir files without a <file>.json naming theirs",
    )
    parser.add_argument(
        "--cat-seg",
        nargs=2,
        action="append",
        default=[],
        metavar=("CONFIG", "WEIGHTS"),
        help="offer a trained CAT-Seg (its config and detectron2 checkpoint); repeatable",
    )
    parser.add_argument("--no-zoo", action="store_true", help="do not offer cached zoo models")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="ask Gradio for a public link")
    parser.add_argument(
        "--device", default="auto", help="auto (a GPU when there is one), cpu, cuda"
    )
    parser.add_argument("--max-pixels", type=float, default=16e6)
    parser.add_argument("--max-upload-mb", type=int, default=20)
    parser.add_argument("--max-classes", type=int, default=400, help="per vocabulary")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's)")
    add_register_argument(parser)
    return parser.parse_args(argv)


def build(args: argparse.Namespace):
    """The page of these arguments (not launched)."""
    import torch

    import densevlm_d2  # noqa: F401  (registers the library's datasets and models)
    from densevlm_d2.data.vocabulary import dataset_vocabulary
    from densevlm_d2.predictor import known_kinds

    from .catalogue import DEMO_REGISTER, Catalogue, register_files
    from .handlers import Handlers
    from .ui import build_page

    if args.threads:
        torch.set_num_threads(args.threads)
    register_files(args.register)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    catalogue = Catalogue.discover(
        args.demo_dir, args.models_dir, args.models_arch, args.cat_seg, device, not args.no_zoo
    )
    known = list(known_kinds())
    examples = [str(ASSETS / p) for p in PHOTOS]
    default_vocabulary = GENERIC_VOCABULARY
    default_image = examples[0]
    if any(c.register == (DEMO_REGISTER,) for c in catalogue.choices.values()):
        register_files([DEMO_REGISTER])
        demo_vocabulary = dataset_vocabulary("densevlm_demo_world_val")
        known.insert(0, demo_vocabulary)
        default_vocabulary = ", ".join(demo_vocabulary.display_names)
        val = Path(args.demo_dir) / "datasets" / "demo_world" / "val"
        world = sorted(val.glob("*.jpg"))[:4] if val.is_dir() else []
        examples = [str(p) for p in world] + examples
        default_image = examples[0]
    handlers = Handlers(
        catalogue, known, max_pixels=int(args.max_pixels), max_classes=args.max_classes
    )
    logging.getLogger(__name__).info("models: %s", ", ".join(catalogue.labels) or "none")
    return build_page(handlers, examples, default_image, default_vocabulary)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        page = build(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from .ui import CSS, THEME

    page.queue(default_concurrency_limit=1).launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        max_file_size=f"{args.max_upload_mb}mb",
        theme=THEME,
        css=CSS,
        ssr_mode=False,
        footer_links=[],
        inbrowser=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
