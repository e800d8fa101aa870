"""The memory planner: saved-tensor accounting counted by hand on small models, real and fake;
fake tensors' data-dependent sizes at their largest; the plan's arithmetic; the tool on the tiny
recipe, and on a full-size one (slow)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from densevlm_d2.utils.memory import (
    GiB,
    StepMemory,
    count_saved_tensors,
    fake_modes,
    largest_batch,
    measure_step,
    state_bytes,
)
from tests.helpers import load_tool

F32 = 4


def _stack() -> nn.Sequential:
    torch.manual_seed(0)
    layers = [nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)]
    return nn.Sequential(*layers)


def _saved(model, x, checkpointed=False) -> int:
    with count_saved_tensors(exclude=list(model.parameters())) as saved:
        if checkpointed:  # the first four layers as one segment, recomputed in the backward
            y = model[4](checkpoint(model[:4], x, use_reentrant=False))
        else:
            y = model(x)
    y.sum().backward()
    return sum(saved.values())


@pytest.mark.parametrize("fake", [False, True])
def test_a_linear_relu_stack_saves_what_a_hand_count_says(fake):
    """Batch 3: the input (for the first weight's gradient, 3x8) and both ReLU outputs (each saved
    once, by the ReLU and the next Linear: one storage, 3x16); weights are not activations. With
    the first four layers checkpointed: the segment's input and the last ReLU's output."""
    if fake:
        with fake_modes():
            model, x = _stack(), torch.zeros(3, 8)
            full, ckpt = _saved(model, x), _saved(model, x, checkpointed=True)
    else:
        model, x = _stack(), torch.randn(3, 8)
        full, ckpt = _saved(model, x), _saved(model, x, checkpointed=True)
    assert full == (3 * 8 + 2 * 3 * 16) * F32
    assert ckpt == (3 * 8 + 3 * 16) * F32


def test_autocast_copies_are_counted_in_their_own_dtype():
    """bfloat16 autocast, an input that needs a gradient: the Linear saves its input's and its
    weight's bfloat16 copies (2 bytes an element); the float32 weight is not an activation."""
    layer = nn.Linear(8, 16)
    x = torch.randn(3, 8, requires_grad=True)
    with count_saved_tensors(exclude=list(layer.parameters())) as saved:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(x)
    assert y.dtype == torch.bfloat16
    assert sum(saved.values()) == (3 * 8 + 16 * 8) * 2


def test_fake_selections_are_at_their_largest():
    with fake_modes() as (_, selections):
        x = torch.zeros(5, 4)
        assert x[x[:, 0] > 0].shape == (5, 4)  # every row selected
        assert torch.nonzero(x).shape == (20, 2)
        assert x.sum().item() == 1.0  # a value read back is 1
        assert torch.linspace(0, 1, 3).tolist() == [0.0, 0.5, 1.0]  # small constants are real
        layer = nn.Linear(4, 2)
        step = measure_step(lambda: (layer(x) ** 2).sum(), list(layer.parameters()), selections)
    # saved: the input (for the weight's gradient) and the Linear's output (for the square's)
    assert step == StepMemory(saved=(5 * 4 + 5 * 2) * F32, largest=5 * 2 * F32)


def test_views_are_no_transient_peak():
    """A weight expanded over a batch (what a batched matmul of a big token grid does) is a view:
    no memory, so not the step's largest tensor; the product it feeds is."""
    with fake_modes() as (_, selections):
        w = torch.zeros(4, 6)  # frozen: the backward makes no 1000 x 4 x 6 gradient either
        x = torch.zeros(1000, 3, 4, requires_grad=True)
        step = measure_step(lambda: torch.bmm(x, w.expand(1000, 4, 6)).sum(), [], selections)
    assert step.largest == 1000 * 3 * 6 * F32  # the product, not the 1000 x 4 x 6 expand


def test_state_bytes_and_largest_batch():
    model = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 1))
    model[0].requires_grad_(False)
    state = state_bytes(model)
    assert state == {"weights": (110 + 11) * F32, "grads": 11 * F32, "optimizer": 2 * 11 * F32}
    assert largest_batch(fixed=10, per_image=3, budget=20) == 3
    assert largest_batch(fixed=30, per_image=3, budget=20) == 0
    with pytest.raises(ValueError, match="per-image bytes must be positive"):
        largest_batch(1, 0, 10)


def _plan(tool, per_image_gib, ckpt_gib, state_gib=4.0):
    g = GiB
    return tool.Plan(
        recipe="x", input_size="512", batch=64, gpus=4, amp="float16",
        state={"weights": state_gib * g, "grads": 0, "optimizer": 0},
        per_image={False: per_image_gib * g, True: ckpt_gib * g}, fixed={False: 0, True: 0},
        transient={False: (0, 0), True: (0, 0)}, largest={},
        checkpointing_keys=["MODEL.CLIP.GRAD_CHECKPOINTING"],
    )  # fmt: skip


def test_the_24gb_setting_keeps_the_effective_batch():
    tool = load_tool("benchmark_memory")
    # 16 images per GPU fit as they are
    assert tool.setting(_plan(tool, 0.5, 0.1), 24)["checkpointing"] is False
    # they fit only with checkpointing
    s = tool.setting(_plan(tool, 2.0, 0.5), 24)
    assert (s["checkpointing"], s["accumulation_steps"], s["micro_batch"]) == (True, 1, 16)
    # and with accumulation: 16 = 2 steps x 8 images
    s = tool.setting(_plan(tool, 4.0, 2.0), 24)
    assert (s["checkpointing"], s["accumulation_steps"], s["micro_batch"]) == (True, 2, 8)
    assert tool.setting(_plan(tool, 4.0, 2.0, state_gib=30), 24) is None
    assert tool._describe(s, ["MODEL.CLIP.GRAD_CHECKPOINTING"]) == (
        "MODEL.CLIP.GRAD_CHECKPOINTING True, SOLVER.ACCUMULATION_STEPS 2, 8/GPU (~20.0 GB)"
    )


def test_a_gpu_check_needs_a_gpu(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is there")
    with pytest.raises(SystemExit):
        load_tool("benchmark_memory").main(["--gpu-check", "--recipes", "tiny-densevlm"])
    assert "--gpu-check needs a CUDA GPU" in capsys.readouterr().err


def test_the_tool_prints_the_table(capsys, tmp_path):
    tool = load_tool("benchmark_memory")
    tool.main(["--recipes", "tiny-densevlm", "--out", str(tmp_path / "plan.json")])
    out = capsys.readouterr().out
    for column in tool.COLUMNS:
        assert column in out
    assert "| tiny-densevlm | 64 " in out
    plan = __import__("json").loads((tmp_path / "plan.json").read_text())[0]
    assert plan["per_image"]["false"] > plan["per_image"]["true"] > 0  # checkpointing saves


@pytest.mark.slow
def test_a_full_size_recipe_on_fake_tensors(tmp_path):
    """DenseVLM B/16 with the L/14-336 teacher at 512 px: the student's 12 vision blocks train
    (less the last block's query/key), the teacher is frozen; about 30 s."""
    tool = load_tool("benchmark_memory")
    plan = tool.plan("densevlm-b16", tmp_path)
    trainable = plan.state["grads"] / F32
    assert 80e6 < trainable < 90e6  # EVA02-B/16's vision tower
    assert plan.state["optimizer"] == 2 * plan.state["grads"]
    assert plan.per_image[True] < plan.per_image[False] / 4
    assert tool.setting(plan, 24) is not None


def test_fake_and_real_count_the_same_towers(tmp_path):
    """The tiny DenseVLM recipe at 2 images, counted on real CPU tensors and on fake ones: the
    difference is the loss alone (fake: the teacher's thing and stuff selections both at their
    largest; real: all regions one class), the same with checkpointing or without, so the
    student's blocks are counted alike."""
    from detectron2.utils.events import EventStorage

    from densevlm_d2.engine import Trainer

    tool = load_tool("benchmark_memory")
    recipe = tool.RECIPES["tiny-densevlm"]
    extra = []
    for checkpointing in (False, True):
        cfg = tool.recipe_cfg(recipe, checkpointing, tmp_path)
        model = Trainer.build_model(cfg).train()
        batch = tool.make_batch(cfg, recipe.kind, 2)
        with EventStorage(0), count_saved_tensors(list(model.parameters())) as saved:
            tool._loss(model, batch, cfg, "cpu")
        fake = tool.fake_counts(recipe, checkpointing, tmp_path)["steps"][2].saved
        extra.append(fake - sum(saved.values()))
    assert extra[0] == extra[1] > 0


def test_the_gpu_checks_training_steps_run_on_the_cpu(tmp_path):
    """--gpu-check's real steps (the trainer's model, AdamW, the float16 scaler) on the tiny recipe
    with float16 AMP, on the CPU: AdamW's state exists after them (its bytes are predicted)."""
    tool = load_tool("benchmark_memory")
    cfg = tool.recipe_cfg(tool.RECIPES["tiny-densevlm"], True, tmp_path)
    cfg.SOLVER.AMP.ENABLED = True
    optimizer = tool.real_steps(cfg, "regions", images=2)
    moments = [s["exp_avg"] for s in optimizer.state.values()]
    trainable = [p for g in optimizer.param_groups for p in g["params"] if p.requires_grad]
    assert moments and len(moments) == len(trainable)
