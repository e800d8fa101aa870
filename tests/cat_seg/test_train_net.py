"""The tiny CAT-Seg config trains on the demo world's segmentation view through tools/train_net.py:
the loss falls and the val mIoU beats chance (a random-uniform and a constant predictor, computed
from the same labels)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import demo.register  # noqa: F401  (the demo world and CLIP, in spawned processes too)
from demo.world import WorldSpec, write_world
from densevlm_d2.data.datasets.panoptic_semantic import panoptic_to_semantic
from densevlm_d2.engine.curves import metric_groups, read_metrics
from tests.helpers import DEMO_REGISTER, train_net

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "demo" / "cat_seg.yaml"
ITERATIONS = 200


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("d2data")
    world = root / "demo_world"
    write_world(str(world), WorldSpec(seed=5, num_train=48, num_val=12), progress=False)
    for split in ("train", "val"):
        panoptic_to_semantic(
            world / f"panoptic_{split}.json",
            world / f"panoptic_{split}",
            world / f"sem_seg_{split}",
        )
    return root


def chance_miou(label_dir: Path, num_classes: int) -> float:
    """The better of two label-blind predictors' mIoU (%), as detectron2 counts it (classes absent
    from the labels and never predicted do not count): every pixel the most frequent class, or
    each pixel a uniformly random class (its expected confusion)."""
    counts = np.zeros(num_classes)
    for f in label_dir.glob("*.png"):
        labels = np.asarray(Image.open(f)).ravel()
        counts += np.bincount(labels[labels < num_classes], minlength=num_classes)
    total, present = counts.sum(), counts > 0
    uniform = counts / num_classes / (counts + total / num_classes - counts / num_classes)
    constant = counts.max() / total  # the IoU of the constant class; 0 for the others present
    return 100 * max(uniform[present].mean(), constant / present.sum())


@pytest.mark.slow
def test_tiny_config_trains_with_falling_loss_and_beats_chance(world, tmp_path):
    out = tmp_path / "out"
    train_net(
        TINY, "MODEL.CLIP.RANDOM_INIT", "True", "SOLVER.MAX_ITER", ITERATIONS,
        "SOLVER.CHECKPOINT_PERIOD", ITERATIONS, "OUTPUT_DIR", out, datasets=world, timeout=1500,
        register=(DEMO_REGISTER,),
    )  # fmt: skip
    assert (out / "model_final.pth").is_file()
    losses = [
        json.loads(line)["total_loss"]
        for line in (out / "metrics.json").read_text().splitlines()
        if "total_loss" in line
    ]
    assert len(losses) >= 4
    first, last = np.mean(losses[:2]), np.mean(losses[-2:])
    assert last < 0.8 * first, losses
    metrics = json.loads(
        (out / "inference" / "densevlm_demo_world_val_sem_seg" / "sem_seg_metrics.json").read_text()
    )
    chance = chance_miou(world / "demo_world" / "sem_seg_val", 11)
    assert metrics["num_images"] == 12
    assert metrics["mIoU"] > chance + 5, (metrics["mIoU"], chance)
    # the run's curves: its losses, learning rate and the evaluation, drawn beside metrics.json
    assert (out / "curves.png").stat().st_size > 0
    assert {"losses", "learning rate", "sem_seg"} <= set(metric_groups(read_metrics(out)))


def _two_process_main(cfg_dict, out):
    from detectron2.config import CfgNode
    from detectron2.utils import comm

    from densevlm_d2.engine import Trainer

    trainer = Trainer(CfgNode(cfg_dict))
    before = {k: v.detach().clone() for k, v in trainer.model.module.state_dict().items()}
    trainer.train()
    after = {k: v.detach() for k, v in trainer.model.module.state_dict().items()}
    torch.save({"before": before, "after": after}, Path(out) / f"rank{comm.get_rank()}.pt")


@pytest.mark.slow
def test_two_cpu_processes_keep_identical_weights(world, tmp_path, monkeypatch):
    from detectron2.config import get_cfg

    import densevlm_d2
    from densevlm_d2.engine import launch

    monkeypatch.setenv("DETECTRON2_DATASETS", str(world))  # the processes register the world
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.merge_from_file(str(TINY))
    cfg.merge_from_list(
        ["MODEL.CLIP.RANDOM_INIT", True, "SOLVER.MAX_ITER", 3, "SOLVER.IMS_PER_BATCH", 4,
         "SOLVER.CHECKPOINT_PERIOD", 100, "DATASETS.TEST", (), "OUTPUT_DIR", str(tmp_path)]
    )  # fmt: skip
    launch(_two_process_main, 2, args=(json.loads(json.dumps(cfg)), str(tmp_path)), dist_url="auto")
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    before, after = r0["before"], r0["after"]
    assert after.keys() == r1["after"].keys()
    assert all(torch.equal(after[k], r1["after"][k]) for k in after)  # the same on both ranks
    # what trains moved: the head, the query and value (not key) rows of a text attention layer,
    # a vision value projection; the rest of the CLIP did not
    assert not torch.equal(after["aggregator.head.weight"], before["aggregator.head.weight"])
    fused = "backbone.model.text.transformer.resblocks.0.attn.in_proj_weight"
    rows = (after[fused] - before[fused]).abs().sum(dim=1)
    width = rows.shape[0] // 3
    assert (
        rows[:width].sum() > 0
        and rows[width : 2 * width].sum() == 0
        and rows[2 * width :].sum() > 0
    )
    v = "backbone.model.visual.trunk.blocks.0.attn.v_proj.weight"
    assert not torch.equal(after[v], before[v])
    for frozen in (
        "backbone.model.visual.trunk.pos_embed",
        "backbone.model.text.token_embedding.weight",
        "backbone.model.visual.trunk.blocks.0.attn.k_proj.weight",
    ):
        assert torch.equal(after[frozen], before[frozen]), frozen
