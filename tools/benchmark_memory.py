#!/usr/bin/env python
r"""GPU memory of the published training recipes, planned without a GPU: for each recipe, the
bytes of weights, gradients and AdamW state, and the activations per image with and without
gradient checkpointing, counted on fake tensors (densevlm_d2.utils.memory; docs/memory.md); then
the largest per-GPU micro-batch on 24, 40 and 80 GB cards and the setting that keeps the published
effective batch on 24 GB cards.

    python tools/benchmark_memory.py                              # every recipe (a few minutes)
    python tools/benchmark_memory.py --recipes densevlm-b16 fvit-b16-ovcoco
    python tools/benchmark_memory.py --gpu-check --out memory.json  # on a GPU: the real peaks

``--gpu-check`` also runs one real training step (forward, backward, AdamW step, twice) of each
recipe at ``--gpu-batch`` images on the GPU and prints torch.cuda.max_memory_allocated against the
prediction.
"""

import densevlm_d2  # first: its import silences fvcore's import warnings before detectron2's

# isort: split

import argparse
import functools
import json
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from detectron2.config import get_cfg
from detectron2.modeling.roi_heads import roi_heads as d2_roi_heads
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from densevlm_d2.clip.models import embed_dim_of
from densevlm_d2.engine import Trainer
from densevlm_d2.modeling import get_clip_backbone
from densevlm_d2.utils.memory import (
    GiB,
    fake_modes,
    largest_batch,
    make_fake,
    measure_step,
    state_bytes,
)

ROOT = Path(__file__).resolve().parents[1]
CARDS = (24, 40, 80)
#: what a card leaves to tensors: the CUDA context and library workspaces (1 GiB), and 10% for the
#: caching allocator's fragmentation (docs/memory.md)
CONTEXT_GIB, FRAGMENTATION = 1.0, 0.10
#: ground-truth objects per detection image (F-ViT; a typical COCO/LVIS count)
DETECTION_OBJECTS = 20


@dataclass(frozen=True)
class Recipe:
    config: str
    gpus: int  # the published GPU count (effective batch: the config's SOLVER.IMS_PER_BATCH)
    kind: str  # "regions", "sem_seg" or "detection": what one training image is
    opts: tuple[str, ...] = ()


RECIPES = {
    "densevlm-b16": Recipe("configs/coco/densevlm_eva02_b16.yaml", 4, "regions"),
    "densevlm-l14": Recipe(
        "configs/coco/densevlm_eva02_b16.yaml",
        4,
        "regions",
        ("MODEL.CLIP.MODEL_NAME", "EVA02-CLIP-L-14", "MODEL.CLIP.TRAINABLE_BLOCKS", "24"),
    ),  # fmt: skip
    "densevlm-openai-l14-336": Recipe(
        "configs/coco/densevlm_openai_l14_336.yaml", 4, "regions"
    ),  # fmt: skip
    "clipself-b16": Recipe("configs/coco/clipself_eva02_b16.yaml", 4, "regions"),
    "catseg-b16": Recipe("configs/cat_seg/eva02_b16.yaml", 4, "sem_seg"),
    "catseg-l14": Recipe("configs/cat_seg/eva02_l14_336.yaml", 4, "sem_seg"),
    "fvit-b16-ovcoco": Recipe("configs/ovcoco/fvit_eva02_b16.yaml", 8, "detection"),
    "fvit-l14-ovcoco": Recipe("configs/ovcoco/fvit_eva02_l14.yaml", 8, "detection"),
    "fvit-b16-ovlvis": Recipe("configs/ovlvis/fvit_eva02_b16.yaml", 8, "detection"),
    "fvit-l14-ovlvis": Recipe("configs/ovlvis/fvit_eva02_l14.yaml", 8, "detection"),
}
PUBLISHED = list(RECIPES)
#: not published: tiny models at 64 px, for tests and a quick look
RECIPES["tiny-densevlm"] = Recipe("configs/coco/tiny_densevlm_cpu.yaml", 1, "regions")


def recipe_cfg(recipe: Recipe, checkpointing: bool, work: Path):
    """The recipe's config with random weights, random class-embedding files (no text tower run
    for frozen towers' class names), and checkpointing on or off where the config has the key."""
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.merge_from_file(str(ROOT / recipe.config))
    cfg.merge_from_list(list(recipe.opts))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.CLIP.RANDOM_INIT, cfg.MODEL.CLIP.CHECKPOINT = True, ""
    cfg.MODEL.CLIP.TEXT_CACHE.ENABLED = False  # fake weights have no digest to key a cache on
    for key in checkpointing_keys(cfg, recipe.kind):
        cfg.MODEL[key.split(".")[1]].GRAD_CHECKPOINTING = checkpointing
    if cfg.MODEL.META_ARCHITECTURE == "DenseVLM":
        cfg.MODEL.DENSEVLM.TEACHER.CHECKPOINT = ""
        cfg.MODEL.DENSEVLM.THRESHOLD = 0.0  # every region distilled: the most memory, on a GPU too
        vocabulary = cfg.MODEL.DENSEVLM.VOCABULARY
        size = len(densevlm_d2.dataset_vocabulary(vocabulary).names)
        for node, who in ((cfg.MODEL.CLIP, "student"), (cfg.MODEL.DENSEVLM.TEACHER, "teacher")):
            path = work / f"{who}_{node.MODEL_NAME}.npy"
            np.save(path, np.ones((size, embed_dim_of(node.MODEL_NAME)), np.float32))
            node.TEXT_EMBEDDINGS = [[vocabulary, str(path)]]
    if recipe.kind == "detection":  # the classes' count matters, not their names or prompts
        n = cfg.MODEL.ROI_HEADS.NUM_CLASSES
        cfg.MODEL.TEXT_CLASSIFIER.CLASS_NAMES = [f"class {i}" for i in range(n)]
        cfg.MODEL.TEXT_CLASSIFIER.TEXT.PROMPTS = ["a photo of a {}."]
    return cfg


#: the parts each kind of recipe trains, whose activations checkpointing recomputes (F-ViT's CLIP is
#: frozen: its key would change nothing)
CHECKPOINTED_PARTS = {"regions": ("CLIP",), "sem_seg": ("CLIP", "CAT_SEG"), "detection": ("FVIT",)}


def checkpointing_keys(cfg, kind: str) -> list[str]:
    """The gradient-checkpointing keys of what a recipe of ``kind`` trains, those the config has."""
    return [f"MODEL.{n}.GRAD_CHECKPOINTING" for n in CHECKPOINTED_PARTS[kind]
            if "GRAD_CHECKPOINTING" in cfg.MODEL.get(n, {})]  # fmt: skip


def make_batch(cfg, kind: str, images: int) -> list[dict]:
    """``images`` training inputs as the recipe's train mapper makes them, at its input size."""
    if kind == "regions":
        r = cfg.INPUT.REGIONS
        size, n = r.IMAGE_SIZE, r.MAX_BOXES
        box = torch.tensor([[0.0, 0.0, size / 6, size / 6]]).repeat(n, 1)
        one = {"image": torch.zeros(3, size, size, dtype=torch.uint8), "boxes": box}
        if cfg.MODEL.META_ARCHITECTURE == "CLIPSelf":
            one["crops"] = torch.zeros(n, 3, r.CROP_SIZE, r.CROP_SIZE)
        return [dict(one) for _ in range(images)]
    if kind == "sem_seg":
        h, w = cfg.INPUT.CROP.SIZE
        one = {"image": torch.zeros(3, h, w, dtype=torch.uint8),
               "sem_seg": torch.zeros(h, w, dtype=torch.long)}  # fmt: skip
        return [dict(one) for _ in range(images)]
    size = cfg.INPUT.LSJ.IMAGE_SIZE
    return [_detection_input(cfg, size) for _ in range(images)]


def _detection_input(cfg, size: int) -> dict:
    n = DETECTION_OBJECTS
    corner = torch.linspace(0, size / 2, n)
    boxes = torch.stack([corner, corner, corner + size / 4, corner + size / 4], dim=1)
    target = Instances((size, size), gt_boxes=Boxes(boxes), gt_classes=torch.zeros(n).long())
    if cfg.MODEL.MASK_ON:
        target.gt_masks = BitMasks(torch.zeros(n, size, size, dtype=torch.bool))
    return {"image": torch.zeros(3, size, size, dtype=torch.uint8), "instances": target}


def _autocast(cfg, device_type: str):
    amp = cfg.SOLVER.AMP
    dtype = torch.bfloat16 if amp.PRECISION == "bfloat16" else torch.float16
    return torch.autocast(device_type, dtype=dtype, enabled=amp.ENABLED)


def _loss(model, batch, cfg, device_type):
    with _autocast(cfg, device_type):
        return sum(model(batch).values())


def _foreground_at_most(cfg):
    """detectron2's foreground RoIs (mask head) at their largest: the sampler's positive share of
    ``BATCH_SIZE_PER_IMAGE``, not every sampled RoI (fake values select everything)."""
    h = cfg.MODEL.ROI_HEADS
    most = int(h.BATCH_SIZE_PER_IMAGE * h.POSITIVE_FRACTION)

    def select(proposals, bg_label):
        kept = [p[:most] for p in proposals]
        masks = [torch.arange(len(p)) < most for p in proposals]
        return kept, masks

    return mock.patch.object(d2_roi_heads, "select_foreground_proposals", select)


def fake_counts(recipe: Recipe, checkpointing: bool, work: Path) -> dict:
    """State bytes, and the saved and largest bytes of one step at 1 and 2 images."""
    cfg = recipe_cfg(recipe, checkpointing, work)
    with fake_modes() as (fake, selections), EventStorage(0), _foreground_at_most(cfg):
        model = make_fake(Trainer.build_model(cfg), fake).train()
        params = list(model.parameters())
        steps = {}
        for images in (1, 2):
            batch = make_batch(cfg, recipe.kind, images)
            step = functools.partial(_loss, model, batch, cfg, "cpu")
            steps[images] = measure_step(step, params, selections)
            model.zero_grad(set_to_none=True)
        blocks = get_clip_backbone(model).tower.num_blocks
        return {"state": state_bytes(model), "steps": steps, "cfg": cfg, "blocks": blocks}


@dataclass
class Plan:
    recipe: str
    input_size: str
    batch: int  # published effective batch
    gpus: int
    amp: str
    state: dict  # weights, grads, optimizer (bytes)
    per_image: dict  # False/True (checkpointing) -> activation bytes per image
    fixed: dict  # False/True -> activation bytes independent of the batch
    transient: dict  # False/True -> (fixed, per image) of the largest single tensor (+ recompute)
    largest: dict  # card GB -> (without, with checkpointing) largest micro-batch
    checkpointing_keys: list  # the config keys that turn checkpointing on

    def costs(self, checkpointing: bool) -> tuple[float, float]:
        """(fixed, per image) bytes of a process: state + activations + the transient."""
        t0, t1 = self.transient[checkpointing]
        fixed = sum(self.state.values()) + self.fixed[checkpointing] + t0
        return fixed, self.per_image[checkpointing] + t1

    def peak(self, images: int, checkpointing: bool) -> float:
        """Predicted bytes at ``images`` per process."""
        fixed, per_image = self.costs(checkpointing)
        return fixed + images * per_image


def budget(card_gb: float) -> float:
    return (card_gb - CONTEXT_GIB) * (1 - FRAGMENTATION) * GiB


def plan(name: str, work: Path) -> Plan:
    recipe = RECIPES[name]
    counts = {ckpt: fake_counts(recipe, ckpt, work) for ckpt in (False, True)}
    cfg = counts[False]["cfg"]
    fixed, per_image, transient = {}, {}, {}
    for ckpt, c in counts.items():
        s1, s2 = c["steps"][1], c["steps"][2]
        per_image[ckpt] = s2.saved - s1.saved
        fixed[ckpt] = s1.saved - per_image[ckpt]
        # checkpointing recomputes one segment at a time in the backward: its activations
        recompute = _recompute(counts, ckpt)
        transient[ckpt] = (2 * s1.largest - s2.largest + recompute[0],
                           s2.largest - s1.largest + recompute[1])  # fmt: skip
    result = Plan(
        recipe=name, input_size=_input_size(cfg, recipe.kind), batch=cfg.SOLVER.IMS_PER_BATCH,
        gpus=recipe.gpus, amp=cfg.SOLVER.AMP.PRECISION if cfg.SOLVER.AMP.ENABLED else "float32",
        state=counts[False]["state"], per_image=per_image, fixed=fixed, transient=transient,
        largest={}, checkpointing_keys=checkpointing_keys(cfg, recipe.kind),
    )  # fmt: skip
    for card in CARDS:
        result.largest[card] = tuple(_fits(result, card, ckpt) for ckpt in (False, True))
    return result


def _recompute(counts, checkpointing: bool) -> tuple[float, float]:
    """One recomputed segment's activations (fixed, per image): what checkpointing saves,
    spread over the student's blocks (each block is one segment)."""
    if not checkpointing:
        return 0.0, 0.0
    n = counts[True]["blocks"]
    saved = {k: counts[False]["steps"][k].saved - counts[True]["steps"][k].saved for k in (1, 2)}
    per = (saved[2] - saved[1]) / n
    return max(0.0, (saved[1] / n) - per), max(0.0, per)


def _input_size(cfg, kind: str) -> str:
    if kind == "regions":
        return f"{cfg.INPUT.REGIONS.IMAGE_SIZE}"
    if kind == "sem_seg":
        return "x".join(str(s) for s in cfg.INPUT.CROP.SIZE)
    return f"{cfg.INPUT.LSJ.IMAGE_SIZE}"


def _fits(p: Plan, card: int, checkpointing: bool) -> int:
    return largest_batch(*p.costs(checkpointing), budget(card))


def setting(p: Plan, card: int) -> dict | None:
    """The published effective batch on ``card`` GB cards at the published GPU count: without
    checkpointing if the whole per-GPU batch fits, else with it and the fewest accumulation steps
    (a divisor of the per-GPU batch); None if not even one image fits."""
    per_gpu = p.batch // p.gpus
    for ckpt in (False, True):
        for steps in (d for d in range(1, per_gpu + 1) if per_gpu % d == 0):
            if ckpt is False and steps > 1:
                break
            micro = per_gpu // steps
            if p.peak(micro, ckpt) <= budget(card):
                return {"checkpointing": ckpt, "accumulation_steps": steps, "micro_batch": micro,
                        "predicted_gb": round(p.peak(micro, ckpt) / GiB, 1)}  # fmt: skip
    return None


COLUMNS = ("recipe", "input", "batch (GPUs)", "AMP", "weights/grads/AdamW GB",
           "act/image GB (ckpt)", "max micro-batch 24/40/80 GB (ckpt)",
           "24 GB setting")  # fmt: skip


def table(plans: list[Plan]) -> str:
    rows = [COLUMNS]
    for p in plans:
        s = p.state
        ckpt = setting(p, 24)
        rows.append((
            p.recipe, p.input_size, f"{p.batch} ({p.gpus})", p.amp,
            "/".join(f"{s[k] / GiB:.2f}" for k in ("weights", "grads", "optimizer")),
            f"{p.per_image[False] / GiB:.2f} ({p.per_image[True] / GiB:.2f})",
            " / ".join(f"{a} ({b})" for a, b in (p.largest[c] for c in CARDS)),
            _describe(ckpt, p.checkpointing_keys),
        ))  # fmt: skip
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(COLUMNS))]
    lines = [
        "| " + " | ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)) + " |"
        for r in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _describe(s: dict | None, keys: list[str]) -> str:
    if s is None:
        return "does not fit"
    flags = "".join(f"{k} True, " for k in keys) if s["checkpointing"] else ""
    return (f"{flags}SOLVER.ACCUMULATION_STEPS {s['accumulation_steps']}, "
            f"{s['micro_batch']}/GPU (~{s['predicted_gb']} GB)")  # fmt: skip


def real_steps(cfg, kind: str, images: int, steps: int = 2) -> torch.optim.Optimizer:
    """``steps`` real training steps (forward, backward, AdamW step) on ``cfg.MODEL.DEVICE``, as
    the trainer runs them; returns the optimiser (its state exists after them)."""
    device = torch.device(cfg.MODEL.DEVICE).type
    model = Trainer.build_model(cfg).train()
    optimizer = Trainer.build_optimizer(cfg, model)
    amp = cfg.SOLVER.AMP
    # memory does not depend on the scale: a small one skips no step (AdamW's state must exist)
    fp16 = amp.ENABLED and amp.PRECISION == "float16"
    scaler = torch.amp.GradScaler(device, init_scale=1.0) if fp16 else None
    with EventStorage(0):
        for _ in range(steps):
            loss = _loss(model, make_batch(cfg, kind, images), cfg, device)
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
    return optimizer


def measure_gpu(p: Plan, checkpointing: bool, images: int, work: Path) -> dict:
    """The real peak of :func:`real_steps` on CUDA against :meth:`Plan.peak`; printed too."""
    cfg = recipe_cfg(RECIPES[p.recipe], bool(checkpointing), work)
    cfg.MODEL.DEVICE = "cuda"
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    real_steps(cfg, RECIPES[p.recipe].kind, images)
    torch.cuda.synchronize()
    peak, predicted = torch.cuda.max_memory_allocated(), p.peak(images, bool(checkpointing))
    torch.cuda.empty_cache()
    result = {"images": images, "peak_gb": peak / GiB, "predicted_gb": predicted / GiB,
              "error": (predicted - peak) / peak}  # fmt: skip
    print(f"GPU check {p.recipe} checkpointing={bool(checkpointing)} images={images}: real peak "
          f"{peak / GiB:.2f} GiB, predicted {predicted / GiB:.2f} GiB, error "
          f"{100 * result['error']:+.1f}%", flush=True)  # fmt: skip
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipes", nargs="+", choices=sorted(RECIPES), default=PUBLISHED)
    parser.add_argument("--out", type=Path, help="write the plans (and GPU peaks) as JSON")
    parser.add_argument("--gpu-check", action="store_true", help="measure the real peaks on CUDA")
    parser.add_argument("--gpu-batch", type=int, default=1, help="images per step in --gpu-check")
    args = parser.parse_args(argv)
    if args.gpu_check and not torch.cuda.is_available():
        parser.error("--gpu-check needs a CUDA GPU")
    logging.getLogger("densevlm_d2").setLevel(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="benchmark_memory_"))
    plans = [plan(name, work) for name in args.recipes]
    print(table(plans))
    results = [dict(asdict(p), setting_24gb=setting(p, 24)) for p in plans]
    if args.gpu_check:
        for p, r in zip(plans, results, strict=True):
            r["gpu"] = {str(ckpt): measure_gpu(p, ckpt, args.gpu_batch, work) for ckpt in (0, 1)}
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
