#!/usr/bin/env python
r"""Open-vocabulary detector speed: training and inference images/s and peak memory of F-ViT
(frozen CLIP ViT + simple pyramid + FPN + RPN + text-classifier box head + CLIP score fusion, and
the mask head where the config has one: OV-LVIS).

    # the published OV-COCO B/16 setting (640 px, AMP), on a GPU
    python tools/benchmark_detector.py --config-file configs/ovcoco/fvit_eva02_b16.yaml --batch 8
    # the CPU-sized recipe of the tests and the demo world
    python tools/benchmark_detector.py --config-file configs/demo/fvit.yaml \
        --register demo/register.py --batch 4
    # B/16 at 640 px on the CPU (slow: a few iterations)
    python tools/benchmark_detector.py --config-file configs/ovcoco/fvit_eva02_b16.yaml \
        --batch 2 --iters 2 --device cpu
    # OV-LVIS: 1,203 classes and the mask head, B/16 at 1024 px (and its CPU-sized recipe)
    python tools/benchmark_detector.py --config-file configs/ovlvis/fvit_eva02_b16.yaml --batch 8
    python tools/benchmark_detector.py --config-file configs/ovlvis/tiny_cpu.yaml \
        --register demo/register.py --batch 2

Weights and class embeddings are random (speed does not depend on them, CLIP checkpoints are not
read, and the MODEL.ROI_HEADS.NUM_CLASSES class embeddings are drawn, not encoded); images are
synthetic (random pixels, the config's canvas size, 5 random boxes each, with box-shaped polygon
masks when MODEL.MASK_ON), fed straight to the model (no data loader). A training iteration is
forward, loss, backward, gradient clipping and the AdamW step; inference is the full test-time
path with score fusion, NMS and mask pasting. Peak memory: the CUDA allocator's peak on a GPU,
the process's peak RSS on the CPU.
"""

import densevlm_d2  # first: its import silences fvcore's import warnings before detectron2's

# isort: split

import argparse
import resource
import time

import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances, PolygonMasks
from detectron2.utils.events import EventStorage

from densevlm_d2.engine import Trainer
from densevlm_d2.modeling import OpenVocabROIHeads
from densevlm_d2.utils.registration import add_register_argument, run_register_files


def synthetic_batch(
    n: int, size: int, num_classes: int, device, seed: int, masks: bool = False
) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(n):
        image = torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8)
        xy = torch.rand(5, 2, generator=g) * size * 0.7
        wh = torch.rand(5, 2, generator=g) * size * 0.3 + 8
        inst = Instances((size, size))
        inst.gt_boxes = Boxes(torch.cat([xy, xy + wh], 1))
        inst.gt_classes = torch.randint(0, num_classes, (5,), generator=g)
        if masks:
            inst.gt_masks = PolygonMasks(
                [
                    [[x0, y0, x1, y0, x1, y1, x0, y1]]
                    for x0, y0, x1, y1 in inst.gt_boxes.tensor.tolist()
                ]
            )
        batch.append({"image": image.to(device), "instances": inst.to(device), "height": size,
                      "width": size})  # fmt: skip
    return batch


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", default="configs/ovcoco/fvit_eva02_b16.yaml")
    parser.add_argument("--batch", type=int, default=2, help="images per iteration")
    parser.add_argument("--iters", type=int, default=3, help="timed iterations after one warm-up")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--no-amp", action="store_true", help="float32 even where the config uses AMP"
    )
    add_register_argument(parser)
    args = parser.parse_args(argv)
    run_register_files(args.register)

    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(
        [
            "MODEL.CLIP.CHECKPOINT",
            "",
            "MODEL.DEVICE",
            args.device,
            "MODEL.CLIP.TEXT_CACHE.ENABLED",
            "False",
        ]
    )
    size = cfg.INPUT.LSJ.IMAGE_SIZE
    amp = cfg.SOLVER.AMP.ENABLED and not args.no_amp and args.device.startswith("cuda")
    model = build_model(cfg)
    names = [f"class {i}" for i in range(cfg.MODEL.ROI_HEADS.NUM_CLASSES)]
    g = torch.Generator().manual_seed(0)
    for head in (m for m in model.modules() if isinstance(m, OpenVocabROIHeads)):
        dim = head.box_predictor.embed_dim
        embeddings = torch.nn.functional.normalize(
            torch.randn(len(names), dim, generator=g), dim=-1
        )
        head.set_vocabulary(
            names, embeddings, torch.randn(dim, generator=g), names[: len(names) // 4]
        )
    masks = cfg.MODEL.MASK_ON
    optimizer = Trainer.build_optimizer(cfg, model)
    cuda = args.device.startswith("cuda")

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def timed(step, n):
        step(0)  # warm-up
        sync()
        start = time.perf_counter()
        for i in range(n):
            step(i + 1)
        sync()
        return time.perf_counter() - start

    def train_step(i):
        data = synthetic_batch(args.batch, size, len(names), args.device, i, masks)
        with torch.autocast("cuda" if cuda else "cpu", dtype=torch.float16, enabled=amp):
            loss = sum(model(data).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    @torch.no_grad()
    def test_step(i):
        data = synthetic_batch(args.batch, size, len(names), args.device, 1000 + i)
        with torch.autocast("cuda" if cuda else "cpu", dtype=torch.float16, enabled=amp):
            model(data)

    model.train()
    with EventStorage(0):
        train_s = timed(train_step, args.iters)
    model.eval()
    test_s = timed(test_step, args.iters)
    images = args.batch * args.iters
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(
        f"{cfg.MODEL.CLIP.MODEL_NAME} F-ViT{' with masks' if masks else ''}, {len(names)} classes, "
        f"{size} px canvas, batch {args.batch}, {args.device}"
        f"{' AMP' if amp else ''}, {torch.get_num_threads()} threads: "
        f"train {images / train_s:.3f} images/s, inference {images / test_s:.3f} images/s, "
        f"peak memory {peak:.2f} GiB, trainable parameters {trainable / 1e6:.1f} M"
    )
    return {"train_images_per_s": images / train_s, "test_images_per_s": images / test_s}


if __name__ == "__main__":
    main()
