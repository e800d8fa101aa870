"""Training: each method learns on a fixed batch; resume is exact; two CPU processes stay in sync;
a non-finite loss stops training; the exported student loads back strictly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.engine import HookBase
from detectron2.utils.events import EventStorage
from PIL import Image

import densevlm_d2
from densevlm_d2.clip.checkpoint import blend_state_dicts
from densevlm_d2.data import register_vocabulary
from densevlm_d2.data.datasets.coco_boxes import register_coco_boxes, register_image_folder
from densevlm_d2.data.mappers import RegionTrainMapper
from densevlm_d2.engine import Trainer, launch

ROOT = Path(__file__).resolve().parents[2]
VOCAB = {
    "source": "test world",
    "classes": ["cat", "dog", "car", "sky", "grass", "wall"],
    "is_thing": [True, True, True, False, False, False],
}


def _register(root: Path) -> None:
    """Register the test world's datasets and vocabulary (again in spawned processes)."""
    images = root / "train2017"
    register_image_folder("test_train_images", str(images), layout="")
    register_image_folder("test_train_one_image", str(root / "one"), layout="")
    register_coco_boxes(
        "test_pseudo_boxes", str(root / "pseudo.json"), str(images), layout="", only_annotated=True
    )
    register_vocabulary("test_toy_vocabulary", root / "vocab.json")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Images, a box json with labels, a toy vocabulary, tiny student and teacher checkpoints."""
    root = tmp_path_factory.mktemp("world")
    images = root / "train2017"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        arr = np.zeros((48, 64, 3), np.uint8)
        arr[:24] = rng.integers(0, 255, 3)
        arr[24:] = rng.integers(0, 255, 3)
        arr[8:30, 10:40] = rng.integers(0, 255, 3)
        Image.fromarray(arr).save(images / f"{i:012d}.jpg")
    (root / "one").mkdir()
    Image.open(images / f"{0:012d}.jpg").save(root / "one" / "000000000000.jpg")
    boxes = {
        "images": [
            {"id": i, "file_name": f"{i:012d}.jpg", "height": 48, "width": 64} for i in range(4)
        ],
        "annotations": [
            {"image_id": i, "bbox": [8.0 * k, 4.0, 16.0, 20.0], "category_id": 10 + (i + k) % 5}
            for i in range(4)
            for k in range(3)
        ],
        "categories": [
            {"id": 10 + c, "name": n} for c, n in enumerate(["cat", "dog", "tree", "sky", "road"])
        ],
    }
    (root / "pseudo.json").write_text(json.dumps(boxes))
    (root / "vocab.json").write_text(json.dumps(VOCAB))
    _register(root)
    torch.manual_seed(0)
    densevlm_d2.save_checkpoint(
        densevlm_d2.build_clip_model("EVA02-Tiny-16"), root / "student.pt", "eva_clip"
    )
    torch.manual_seed(1)
    densevlm_d2.save_checkpoint(
        densevlm_d2.build_clip_model("EVA02-Tiny-16"), root / "teacher.pt", "eva_clip"
    )
    return root


def _cfg(world, arch="DenseVLM", out=None, **overrides):
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.merge_from_file(str(ROOT / "configs" / "coco" / "tiny_densevlm_cpu.yaml"))
    cfg.MODEL.META_ARCHITECTURE = arch
    cfg.MODEL.CLIP.CHECKPOINT = str(world / "student.pt")
    cfg.MODEL.DENSEVLM.TEACHER.CHECKPOINT = str(world / "teacher.pt")
    cfg.MODEL.DENSEVLM.VOCABULARY = "test_toy_vocabulary"
    cfg.MODEL.REGIONCLIP.CONCEPTS = "test_pseudo_boxes"
    cfg.DATASETS.TRAIN = ("test_train_images",)
    cfg.DATASETS.TEST = ()
    cfg.SOLVER.EXPORT_CLIP = False
    cfg.OUTPUT_DIR = str(out or world / "out")
    if arch == "RegionCLIP":
        cfg.DATASETS.TRAIN = ("test_pseudo_boxes",)
        cfg.INPUT.REGIONS.MODE = "labeled"
    for key, value in overrides.items():
        node = cfg
        *path, last = key.split(".")
        for p in path:
            node = getattr(node, p)
        setattr(node, last, value)
    return cfg


@pytest.mark.parametrize(
    "arch",
    [
        pytest.param("DenseVLM", marks=pytest.mark.slow),
        pytest.param("CLIPSelf", marks=pytest.mark.slow),
        "RegionCLIP",
    ],
)
def test_loss_falls_on_a_fixed_batch(world, arch):
    cfg = _cfg(world, arch, **{"MODEL.DENSEVLM.THRESHOLD": 0.0})
    model = Trainer.build_model(cfg)
    optimizer = Trainer.build_optimizer(cfg, model)
    mapper = RegionTrainMapper(cfg, with_crops=model.needs_crops)
    batch = [mapper(d) for d in DatasetCatalog.get(cfg.DATASETS.TRAIN[0])[:2]]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("backbone.model.visual.trunk.blocks.") for n in trainable)
    model.train()
    losses = []
    with EventStorage():
        for _ in range(8):
            loss = sum(model(batch).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < 0.9 * losses[0], losses


class _Crash(HookBase):
    def after_step(self):
        if self.trainer.iter == 1:
            raise RuntimeError("simulated crash")


def _student(trainer):
    return {k: v.clone() for k, v in trainer.model.backbone.model.state_dict().items()}


class _NoRandom:
    """Deterministic stand-in for the mapper's ``random``: first grid shape, cells in order."""

    @staticmethod
    def choice(seq):
        return seq[0]

    @staticmethod
    def shuffle(seq):
        return None


@pytest.mark.slow
def test_killed_run_resumes_exactly(world, tmp_path, monkeypatch):
    """A crash after iteration 1 (checkpoint at iteration 1), then --resume: the same schedule and
    the same final weights as an uninterrupted run (one image and no random region order, so every
    batch is the same)."""
    monkeypatch.setattr("densevlm_d2.data.mappers.region_train_mapper.random", _NoRandom)
    kw = {
        "DATASETS.TRAIN": ("test_train_one_image",),
        "INPUT.REGIONS.MAX_SPLIT": 2,
        "SOLVER.CHECKPOINT_PERIOD": 2,
        "SOLVER.MAX_ITER": 4,
    }
    lrs = {}

    class _LR(HookBase):
        def __init__(self, key):
            self.key = key

        def after_step(self):
            lrs.setdefault(self.key, []).append(self.trainer.optimizer.param_groups[0]["lr"])

    full = Trainer(_cfg(world, out=tmp_path / "full", **kw))
    full.register_hooks([_LR("full")])
    full.train()
    crashed = Trainer(_cfg(world, out=tmp_path / "crash", **kw))
    crashed.register_hooks([_LR("crash"), _Crash()])
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.train()
    assert (tmp_path / "crash" / "last_checkpoint").read_text() == "model_0000001.pth"
    assert not list((tmp_path / "crash").glob("*.tmp"))
    resumed = Trainer(_cfg(world, out=tmp_path / "crash", **kw))
    resumed.register_hooks([_LR("resumed")])
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 2
    assert len(resumed.optimizer.state_dict()["state"]) > 0  # AdamW's moments came back too
    resumed.train()
    assert lrs["crash"] + lrs["resumed"] == lrs["full"]
    a, b = _student(full), _student(resumed)
    diffs = {k: (a[k] - b[k]).abs().max().item() for k in a if not torch.equal(a[k], b[k])}
    assert not diffs, sorted(diffs.items(), key=lambda kv: -kv[1])[:5]
    # the frozen teacher is not saved, and loading a checkpoint still passes the strict check
    saved = torch.load(tmp_path / "full" / "model_final.pth", weights_only=True)
    assert not any(k.startswith("teacher.") for k in saved["model"])


def _two_process_main(cfg_dict, out, root):
    from detectron2.config import CfgNode
    from detectron2.utils import comm

    _register(Path(root))
    trainer = Trainer(CfgNode(cfg_dict))
    trainer.train()
    clip = trainer.model.module.backbone.model
    torch.save(
        {k: v.detach() for k, v in clip.state_dict().items()},
        os.path.join(out, f"rank{comm.get_rank()}.pt"),
    )


@pytest.mark.slow
def test_two_cpu_processes_keep_identical_weights(world, tmp_path):
    cfg = _cfg(
        world,
        out=tmp_path,
        **{"SOLVER.MAX_ITER": 3, "SOLVER.CHECKPOINT_PERIOD": 100, "SOLVER.IMS_PER_BATCH": 2},
    )
    launch(
        _two_process_main,
        2,
        args=(json.loads(json.dumps(cfg)), str(tmp_path), str(world)),
        dist_url="auto",
    )
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    initial = densevlm_d2.build_clip_model("EVA02-Tiny-16")
    densevlm_d2.load_checkpoint(initial, world / "student.pt")
    init = initial.state_dict()
    block = "visual.trunk.blocks.1.mlp.fc2.weight"
    assert not torch.equal(r0[block], init[block])  # trained
    assert all(torch.equal(r0[k], r1[k]) for k in r0)  # and the same on both ranks


def test_non_finite_loss_stops_training(world, tmp_path, monkeypatch):
    from densevlm_d2.modeling.meta_arch import region_alignment

    real = region_alignment.densevlm_loss_terms

    def nan_loss(*args, **kwargs):
        terms, stats = real(*args, **kwargs)
        return {k: v * float("nan") for k, v in terms.items()}, stats

    monkeypatch.setattr(region_alignment, "densevlm_loss_terms", nan_loss)
    trainer = Trainer(_cfg(world, out=tmp_path))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(
        FloatingPointError, match="non-finite loss at iteration 0.*No checkpoint was written yet"
    ):
        trainer.train()
    # stopped before the optimiser step: the weights are untouched
    assert all(torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())


@pytest.mark.slow
def test_blend_and_export(world, tmp_path):
    cfg = _cfg(
        world, out=tmp_path, **{"SOLVER.WEIGHT_BLEND_ALPHA": 0.9, "SOLVER.EXPORT_CLIP": True}
    )
    trainer = Trainer(cfg)
    trainer.train()
    trained = _student(trainer)
    initial = trainer.model.backbone.initial_state  # the trainable weights as loaded
    start = densevlm_d2.build_clip_model("EVA02-Tiny-16")
    densevlm_d2.load_checkpoint(start, world / "student.pt")
    assert initial and all(torch.equal(v, start.state_dict()[k]) for k, v in initial.items())
    expected = {**trained, **blend_state_dicts({k: trained[k] for k in initial}, initial, 0.9)}
    for fmt in ("eva_clip", "open_clip"):
        clip = densevlm_d2.build_clip_model("EVA02-Tiny-16")
        densevlm_d2.load_checkpoint(clip, tmp_path / f"clip_final_{fmt}.pt")  # strict
        for k, v in clip.state_dict().items():
            assert torch.allclose(v, expected[k], atol=1e-6), (fmt, k)
    # training continued unblended: the model still holds the trained weights
    assert all(torch.equal(v, trained[k]) for k, v in _student(trainer).items())
