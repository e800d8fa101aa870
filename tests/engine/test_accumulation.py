"""Gradient accumulation (SOLVER.ACCUMULATION_STEPS): k micro-batches per optimiser step give the
gradients and weights of one k times larger batch of the same images, for every region method and
CAT-Seg; iterations and the schedule stay optimiser steps; under DDP only the last micro-batch
all-reduces; the AMP scaler steps once per iteration; bad settings are clear errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.engine import DefaultTrainer, HookBase
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

import densevlm_d2
from densevlm_d2 import Vocabulary
from densevlm_d2.data.mappers import RegionTrainMapper
from densevlm_d2.engine import Trainer, launch
from densevlm_d2.engine.accumulation import loss_weights, micro_batch_config
from densevlm_d2.engine.amp_step import AMPTrainStep
from tests.cat_seg.test_model import CLASSES as CAT_SEG_CLASSES
from tests.cat_seg.test_model import tiny_cfg as cat_seg_cfg
from tests.engine.test_training import _cfg, _register
from tests.engine.test_training import world as world  # noqa: F401  (the test world fixture)
from tests.helpers import ROOT, coco_train_photos, train_net


def _one_step(model, micro_batches, k):
    """One AMPTrainStep iteration over ``micro_batches`` (k=1: all their images as one batch) from
    the model's current weights; the gradients and the weights after the step. The weights are put
    back afterwards. Plain SGD: AdamW's first step divides each gradient by its own magnitude, which
    turns rounding-level differences of near-zero gradients into learning-rate-sized ones."""
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = _sgd(model)
    copies = [[dict(x) for x in b] for b in micro_batches]  # the step may annotate its inputs
    data = [sum(copies, [])] if k == 1 else copies
    step = AMPTrainStep(model, data, optimizer, accumulation_steps=k)
    step.iter = 0
    model.train()
    with EventStorage():
        step.run_step()
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads = {n: p.grad.clone() for n, p in trained}
    weights = {n: p.detach().clone() for n, p in trained}
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(start[n])
    return grads, weights


def _sgd(model) -> torch.optim.Optimizer:
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)


def _assert_close(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys()
    for k in a:
        scale = a[k].abs().max().item() + 1e-12
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5 * scale), (what, k)


def _region_batches(world, arch, device="cpu"):
    cfg = _cfg(world, arch, **{"MODEL.DENSEVLM.THRESHOLD": 0.0, "MODEL.DEVICE": device})
    torch.manual_seed(0)
    model = Trainer.build_model(cfg)
    mapper = RegionTrainMapper(cfg, with_crops=model.needs_crops)
    dicts = DatasetCatalog.get(cfg.DATASETS.TRAIN[0])[:4]
    torch.manual_seed(0)
    __import__("random").seed(3)  # grid shapes: micro-batches with different region counts
    micro = [[mapper(d) for d in dicts[:2]], [mapper(d) for d in dicts[2:]]]
    if arch == "RegionCLIP":  # 3 labelled boxes per image: one image keeps only one
        x = micro[1][0]
        x["boxes"], x["labels"] = x["boxes"][:1], x["labels"][:1]
    return model, micro


@pytest.mark.parametrize(
    "arch",
    [
        pytest.param("DenseVLM", marks=pytest.mark.slow),
        pytest.param("CLIPSelf", marks=pytest.mark.slow),
        "RegionCLIP",
    ],
)
def test_two_micro_batches_equal_one_batch_twice_as_large(world, arch, device="cpu"):
    """RegionCLIP is exact here because its 100 sampled concepts are all 5 of the test world's (with
    more concepts, the sampled ones differ between one batch and its micro-batches)."""
    model, micro = _region_batches(world, arch, device)
    with torch.no_grad():
        counts = [model.loss_counts([dict(x) for x in b]) for b in micro]
    # the micro-batches average over different numbers of regions: a plain mean of their losses
    # would not be the large batch's
    assert counts[0] != counts[1] and all(counts[0].values()), counts
    big_grads, big_weights = _one_step(model, micro, 1)
    grads, weights = _one_step(model, micro, 2)
    assert any(g.abs().max() > 0 for g in big_grads.values())
    _assert_close(grads, big_grads, "gradient")
    _assert_close(weights, big_weights, "weight")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_two_micro_batches_equal_one_batch_on_cuda(world):
    test_two_micro_batches_equal_one_batch_twice_as_large(world, "DenseVLM", "cuda")


@pytest.mark.slow
def test_cat_seg_two_micro_batches_equal_one_batch():
    """CAT-Seg's loss averages over every pixel and class of its batch, ignored pixels included:
    with training images of one size (the recipes' fixed crops) the images' share is exact."""
    torch.manual_seed(0)
    model = build_model(cat_seg_cfg())
    model.train_classes = Vocabulary.from_names(CAT_SEG_CLASSES)
    g = torch.Generator().manual_seed(0)

    def item(ignored_rows):
        label = torch.randint(0, len(CAT_SEG_CLASSES), (128, 128), generator=g)
        label[:ignored_rows] = 255
        image = torch.randint(0, 256, (3, 128, 128), generator=g, dtype=torch.uint8)
        return {"image": image, "sem_seg": label}

    micro = [[item(0), item(100)], [item(10), item(0)]]
    big_grads, big_weights = _one_step(model, micro, 1)
    grads, weights = _one_step(model, micro, 2)
    assert any(g.abs().max() > 0 for g in big_grads.values())
    _assert_close(grads, big_grads, "gradient")
    _assert_close(weights, big_weights, "weight")


def test_loss_weights_add_up_to_the_large_batch():
    class Counted(torch.nn.Module):
        def loss_counts(self, batch):
            return {"loss_a": sum(x["n"] for x in batch), "loss_none": 0}

    batches = [[{"n": 3}], [{"n": 1}, {"n": 0}, {"n": 4}]]
    w = loss_weights(Counted(), batches)
    assert [x("loss_a") for x in w] == [3 / 8, 5 / 8]
    assert [x("loss_b") for x in w] == [1 / 4, 3 / 4]  # not counted: the share of the images
    assert [x("loss_none") for x in w] == [0.0, 0.0]  # no term anywhere: the loss is 0
    assert [x("loss_b") for x in loss_weights(torch.nn.Linear(1, 1), batches)] == [1 / 4, 3 / 4]


def test_micro_batch_config_and_bad_settings(world):
    cfg = _cfg(world, **{"SOLVER.IMS_PER_BATCH": 8, "SOLVER.ACCUMULATION_STEPS": 2})
    cfg.freeze()
    micro = micro_batch_config(cfg, 2)
    assert micro.SOLVER.IMS_PER_BATCH == 4 and micro.is_frozen()
    assert cfg.SOLVER.IMS_PER_BATCH == 8  # the effective batch is left as it is
    one = _cfg(world, **{"SOLVER.IMS_PER_BATCH": 6})
    assert micro_batch_config(one, 3) is one
    for k, match in [
        (0, "ACCUMULATION_STEPS must be an integer >= 1, got 0"),
        (True, "ACCUMULATION_STEPS must be an integer >= 1, got True"),
        (3, r"IMS_PER_BATCH \(4, .*\) must be divisible by SOLVER.ACCUMULATION_STEPS \(3\)"),
    ]:
        bad = _cfg(world, **{"SOLVER.IMS_PER_BATCH": 4, "SOLVER.ACCUMULATION_STEPS": k})
        with pytest.raises(ValueError, match=match):
            Trainer(bad)  # before any model is built
    bad = _cfg(world, **{"SOLVER.IMS_PER_BATCH": 4, "SOLVER.ACCUMULATION_STEPS": 4})
    with pytest.raises(
        ValueError, match=r"ACCUMULATION_STEPS \(4\) x the number of processes \(2\)"
    ):
        micro_batch_config(bad, 2)
    with pytest.raises(ValueError, match="accumulation_steps must be an integer >= 1, got 0"):
        AMPTrainStep(torch.nn.Linear(1, 1), [], None, accumulation_steps=0)


def test_auto_scaled_batch_is_still_the_effective_batch(world):
    """detectron2's auto_scale_workers (SOLVER.REFERENCE_WORLD_SIZE) scales the effective batch;
    the micro-batches follow it, the same images per process and micro-batch as the reference."""
    kw = {"SOLVER.IMS_PER_BATCH": 64, "SOLVER.ACCUMULATION_STEPS": 4}
    cfg = _cfg(world, **kw, **{"SOLVER.REFERENCE_WORLD_SIZE": 4})
    scaled = DefaultTrainer.auto_scale_workers(cfg, 2)
    assert scaled.SOLVER.IMS_PER_BATCH == 32 and scaled.SOLVER.ACCUMULATION_STEPS == 4
    assert micro_batch_config(scaled, 2).SOLVER.IMS_PER_BATCH == 8  # 4 per process, as with 4
    assert micro_batch_config(cfg, 4).SOLVER.IMS_PER_BATCH == 16


class _Record(HookBase):
    """Learning rate, iteration and the batches drawn so far, after each step."""

    def __init__(self):
        self.rows = []

    def after_step(self):
        t = self.trainer
        self.rows.append((t.iter, t.optimizer.param_groups[0]["lr"]))


@pytest.mark.slow
def test_iterations_and_schedule_stay_optimiser_steps(world, tmp_path):
    """MAX_ITER, the warm-up and cosine, and the checkpoint period count optimiser steps: the same
    iterations, learning rates and checkpoints with and without accumulation; each micro-batch
    holds IMS_PER_BATCH / ACCUMULATION_STEPS images."""
    runs = {}
    for k in (1, 2):
        kw = {"SOLVER.IMS_PER_BATCH": 4, "SOLVER.ACCUMULATION_STEPS": k, "SOLVER.MAX_ITER": 3}
        kw.update({"SOLVER.WARMUP_ITERS": 2, "SOLVER.CHECKPOINT_PERIOD": 2})
        trainer = Trainer(_cfg(world, out=tmp_path / f"k{k}", **kw))
        sizes = []
        loader = trainer._trainer._data_loader_iter
        trainer._trainer._data_loader_iter = (sizes.append(len(b)) or b for b in loader)
        record = _Record()
        trainer.register_hooks([record])
        trainer.train()
        checkpoints = sorted(p.name for p in (tmp_path / f"k{k}").glob("model_*.pth"))
        runs[k] = (record.rows, checkpoints, sizes)
    assert runs[1][0] == runs[2][0] and [i for i, _ in runs[1][0]] == [0, 1, 2]
    assert runs[1][1] == runs[2][1] == ["model_0000001.pth", "model_final.pth"]
    assert runs[1][2] == [4, 4, 4] and runs[2][2] == [2] * 6


@pytest.mark.slow
def test_float16_scaler_steps_once_per_optimiser_step(world, tmp_path):
    kw = {"SOLVER.IMS_PER_BATCH": 4, "SOLVER.ACCUMULATION_STEPS": 2, "SOLVER.MAX_ITER": 2}
    kw.update({"SOLVER.AMP.ENABLED": True, "SOLVER.AMP.PRECISION": "float16"})
    kw["MODEL.DENSEVLM.THRESHOLD"] = 0.0
    trainer = Trainer(_cfg(world, out=tmp_path, **kw))
    scaler = trainer._trainer.grad_scaler
    assert scaler is not None
    calls = {"scale": 0, "step": 0, "update": 0}

    def counting(name):
        real = getattr(scaler, name)

        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)

        return wrapper

    for name in calls:
        setattr(scaler, name, counting(name))
    trainer.train()
    # one backward pass per micro-batch, one unscale-step-update per optimiser step (a step the
    # scaler skips for overflowing float16 gradients halves the scale once, not per micro-batch)
    assert calls == {"scale": 4, "step": 2, "update": 2}
    assert scaler.get_scale() >= 2.0**16 / 4
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert torch.isfinite(torch.tensor(trainer.storage.history("total_loss").values())).all()


class _SGDTrainer(Trainer):
    """The project's trainer with plain SGD (see :func:`_one_step`)."""

    @classmethod
    def build_optimizer(cls, cfg, model):
        return _sgd(model)


def _ddp_main(cfg_dicts, out, root):
    from detectron2.config import CfgNode
    from detectron2.utils import comm
    from detectron2.utils.env import seed_all_rng
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    _register(Path(root))
    for name, cfg_dict in cfg_dicts.items():
        seed_all_rng(0)  # the same images, grids and weights in both runs
        trainer = _SGDTrainer(CfgNode(cfg_dict))
        events = []

        def hook(state, bucket, events=events):
            events.append("allreduce")
            return allreduce_hook(state, bucket)

        trainer.model.register_comm_hook(None, hook)
        step = trainer._trainer
        real = step._forward_backward

        def traced(data, weights, sync, real=real, events=events):
            events.append(f"micro sync={sync}")
            return real(data, weights, sync)

        step._forward_backward = traced
        trainer.train()
        clip = trainer.model.module.backbone.model
        state = {k: v.detach() for k, v in clip.state_dict().items()}
        torch.save(
            {"state": state, "events": events}, os.path.join(out, f"{name}{comm.get_rank()}.pt")
        )


@pytest.mark.slow
def test_ddp_all_reduces_only_the_last_micro_batch(world, tmp_path):
    """Two CPU processes (gloo): with accumulation, no gradient all-reduce follows the first
    micro-batch of a step, and the weights end as without accumulation (same images per process)."""
    cfgs = {}
    for k in (1, 2):
        kw = {"SOLVER.IMS_PER_BATCH": 4, "SOLVER.ACCUMULATION_STEPS": k, "SOLVER.MAX_ITER": 2}
        kw.update({"SOLVER.CHECKPOINT_PERIOD": 100, "MODEL.DENSEVLM.THRESHOLD": 0.0, "SEED": 0})
        cfg = _cfg(world, out=tmp_path / f"k{k}", **kw)
        cfgs[f"k{k}_"] = json.loads(json.dumps(cfg))
    launch(_ddp_main, 2, args=(cfgs, str(tmp_path), str(world)), dist_url="auto")
    for rank in (0, 1):
        one = torch.load(tmp_path / f"k1_{rank}.pt", weights_only=True)
        two = torch.load(tmp_path / f"k2_{rank}.pt", weights_only=True)
        # every all-reduce comes after a synchronising micro-batch, never after a no_sync one
        ev = two["events"]
        assert ev.count("micro sync=False") == ev.count("micro sync=True") == 2
        reduced_after = [ev[i - 1] for i, e in enumerate(ev) if e == "allreduce"]
        assert reduced_after and all(e in ("micro sync=True", "allreduce") for e in reduced_after)
        assert ev.count("allreduce") == one["events"].count("allreduce")
        _assert_close(two["state"], one["state"], f"rank {rank} weights")
    initial = densevlm_d2.build_clip_model("EVA02-Tiny-16")
    densevlm_d2.load_checkpoint(initial, world / "student.pt")
    block = "visual.trunk.blocks.1.mlp.fc2.weight"
    assert not torch.allclose(two["state"][block], initial.state_dict()[block])  # it trained


@pytest.mark.slow
def test_train_net_with_accumulation(tmp_path):
    coco_train_photos(tmp_path, 4)
    out = tmp_path / "out"
    proc = train_net(
        ROOT / "configs" / "coco" / "tiny_densevlm_cpu.yaml",
        *("MODEL.CLIP.RANDOM_INIT", "True", "DATASETS.TEST", "()", "SOLVER.MAX_ITER", "2"),
        *("SOLVER.IMS_PER_BATCH", "4", "SOLVER.ACCUMULATION_STEPS", "2", "OUTPUT_DIR", out),
        datasets=tmp_path,
    )
    assert "4 images per iteration over 1 processes (2 micro-batches each)" in proc.stdout
    rows = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    last = [r for r in rows if "total_loss" in r][-1]  # MAX_ITER counts optimiser steps
    assert last["iteration"] == 1 and {"loss_kl_thing", "loss_kl_stuff"} <= last.keys()
    assert (out / "model_final.pth").is_file()
