"""Weight files at every boundary a user touches: nothing crafted runs, every error names the file
and its role, no model silently runs with random weights, training faults lose nothing and never
leave a non-finite, half-written or empty file."""

from __future__ import annotations

import os
import runpy
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.engine import default_argument_parser

import densevlm_d2
from densevlm_d2.clip.io import WeightFileError
from densevlm_d2.clip.text import load_text_embeddings
from densevlm_d2.engine import CLIPCheckpointer, Trainer
from tests.clip.test_io import Payload, write_crafted
from tests.engine.test_training import _cfg, world  # noqa: F401  (the training world fixture)

ROOT = Path(__file__).resolve().parents[2]


def _tool(name: str) -> dict:
    return runpy.run_path(str(ROOT / "tools" / name))


@pytest.mark.slow
def test_crafted_files_on_every_path_run_nothing(world, tmp_path):  # noqa: F811
    marker = tmp_path / "RAN"
    evil_pt = write_crafted(tmp_path / "evil.pt", marker, "zip")
    evil_pkl = write_crafted(tmp_path / "evil.pkl", marker)
    # the Python API
    with pytest.raises(WeightFileError, match=f"CLIP checkpoint: {evil_pt}"):
        densevlm_d2.load_clip("EVA02-Tiny-16", evil_pt)
    # the student's and the teacher's checkpoints
    with pytest.raises(WeightFileError, match=rf"CLIP \(MODEL.CLIP.CHECKPOINT\): {evil_pt}"):
        Trainer.build_model(_cfg(world, **{"MODEL.CLIP.CHECKPOINT": str(evil_pt)}))
    with pytest.raises(
        WeightFileError, match=rf"teacher CLIP \(MODEL.DENSEVLM.TEACHER.CHECKPOINT\): {evil_pkl}"
    ):
        Trainer.build_model(_cfg(world, **{"MODEL.DENSEVLM.TEACHER.CHECKPOINT": str(evil_pkl)}))
    # MODEL.WEIGHTS, .pt and detectron2's .pkl
    model = Trainer.build_model(_cfg(world))
    for path in (evil_pt, evil_pkl):
        with pytest.raises(WeightFileError, match=rf"model weights \(MODEL.WEIGHTS\): {path}"):
            CLIPCheckpointer(model).resume_or_load(str(path), resume=False)
    # --resume follows last_checkpoint
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(evil_pt, out / "model_0000003.pth")
    (out / "last_checkpoint").write_text("model_0000003.pth")
    trainer = Trainer(_cfg(world, out=out))
    with pytest.raises(WeightFileError, match=r"checkpoint to resume .*model_0000003.pth"):
        trainer.resume_or_load(resume=True)
    # published text embeddings
    np.save(tmp_path / "evil.npy", np.array([Payload()], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=f"{tmp_path / 'evil.npy'} cannot be read"):
        load_text_embeddings(tmp_path / "evil.npy")
    # the converter tool
    with pytest.raises(WeightFileError, match=f"CLIP checkpoint: {evil_pkl}"):
        _tool("convert_checkpoint.py")["main"](
            ["--model", "EVA02-Tiny-16", "--input", str(evil_pkl), "--output",
             str(tmp_path / "x.pt"), "--to", "open_clip"]
        )  # fmt: skip
    assert not marker.exists()


def _eval_only(tmp_path, *opts):
    args = default_argument_parser().parse_args(
        ["--config-file", str(ROOT / "configs" / "eval" / "coco_panoptic_eva02_b16.yaml"),
         "--eval-only", "MODEL.CLIP.MODEL_NAME", "EVA02-Tiny-16", "INPUT.REGIONS.IMAGE_SIZE", "64",
         "DATASETS.TEST", "('test_train_images',)", "OUTPUT_DIR", str(tmp_path / "eval"), *opts]
    )  # fmt: skip
    return _tool("train_net.py")["main"](args)


def test_train_net_weights_errors_and_no_silent_random_model(world, tmp_path):  # noqa: F811
    marker = tmp_path / "RAN"
    evil = write_crafted(tmp_path / "model.pkl", marker)
    with pytest.raises(WeightFileError, match=rf"model weights \(MODEL.WEIGHTS\): {evil}"):
        _eval_only(tmp_path, "MODEL.WEIGHTS", str(evil))
    with pytest.raises(WeightFileError, match=r"MODEL.WEIGHTS\): .*nowhere.pth: file not found"):
        _eval_only(tmp_path, "MODEL.WEIGHTS", str(tmp_path / "nowhere.pth"))
    assert not marker.exists()
    # no weights at all: an error that says how to give them, or how to ask for random ones
    with pytest.raises(ValueError, match=r"no weights.*MODEL.CLIP.CHECKPOINT.*RANDOM_INIT True"):
        _eval_only(tmp_path)


def test_api_random_weights_only_on_request():
    with pytest.raises(ValueError, match="needs weights: pass checkpoint=<file>, or random_init"):
        densevlm_d2.load_clip("EVA02-Tiny-16")
    assert densevlm_d2.load_clip("EVA02-Tiny-16", random_init=True, image_size=64).backbone
    with pytest.raises(ValueError, match="image_size must be"):
        densevlm_d2.load_clip("EVA02-Tiny-16", random_init=True, image_size=0)
    with pytest.raises(ValueError, match="image_size must be"):
        densevlm_d2.load_clip("EVA02-Tiny-16", random_init=True, image_size=12.5)
    with pytest.raises(ValueError, match="at least the patch size 16"):
        densevlm_d2.load_clip("EVA02-Tiny-16", random_init=True, image_size=(8, 64))


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict | list | tuple):
        for v in obj.values() if isinstance(obj, dict) else obj:
            yield from _tensors(v)


def _finite(path: Path) -> bool:
    """Weights and optimiser state (the AdamW moments are saved with the trainer's state)."""
    state = torch.load(path, weights_only=True)
    assert state["trainer"]["_trainer"]["optimizer"]["state"]
    return all(torch.isfinite(t).all() for t in _tensors(state) if t.is_floating_point())


@pytest.mark.slow
def test_a_diverging_run_never_writes_a_non_finite_checkpoint(world, tmp_path):  # noqa: F811
    out = tmp_path / "diverge"
    cfg = _cfg(
        world,
        out=out,
        **{"SOLVER.BASE_LR": 1e6, "SOLVER.CHECKPOINT_PERIOD": 1, "SOLVER.MAX_ITER": 6},
    )
    trainer = Trainer(cfg)
    with pytest.raises(FloatingPointError) as e:
        trainer.train()
    written = sorted(out.glob("model_*.pth"))
    assert all(_finite(p) for p in written)
    last = (out / "last_checkpoint").read_text() if written else None
    if last:  # the error names the last checkpoint, which is finite and resumes
        assert f"{out / last}" in str(e.value) and (out / last) in written
        resumed = Trainer(cfg)
        resumed.resume_or_load(resume=True)
        assert resumed.start_iter == int(last[len("model_") : -len(".pth")]) + 1
    else:
        assert "No checkpoint was written" in str(e.value)
    assert not list(out.glob(".*.tmp"))


@pytest.mark.slow
def test_leftovers_of_a_killed_save_and_file_modes(world, tmp_path):  # noqa: F811
    out = tmp_path / "killed"
    out.mkdir()
    leftovers = [out / ".model_0000001.pth.k3j2.tmp", out / ".last_checkpoint.123.tmp"]
    for p in leftovers:
        p.write_bytes(b"")
    old = os.umask(0o027)
    try:
        trainer = Trainer(_cfg(world, out=out))
        assert not any(p.exists() for p in leftovers)
        # metrics.json is created by the first metrics, not at start: a kill before leaves none
        assert not (out / "metrics.json").exists()
        trainer.train()
    finally:
        os.umask(old)
    assert (out / "metrics.json").stat().st_size > 0
    mode = stat.S_IMODE((out / "model_final.pth").stat().st_mode)
    assert mode == 0o640  # the umask, as for every other output (mkstemp alone gives 0600)


def test_weights_broken_by_a_step_with_a_finite_loss_are_not_saved(world, tmp_path):  # noqa: F811
    """The step that breaks the weights may have a finite loss: the checkpoint after it is
    refused, and the error names the last finite one."""
    out = tmp_path / "broken"
    trainer = Trainer(_cfg(world, out=out, **{"SOLVER.CHECKPOINT_PERIOD": 1}))
    optimizer = trainer._trainer.optimizer
    real_step = optimizer.step

    def step(*args, **kwargs):
        ret = real_step(*args, **kwargs)
        if trainer.iter == 1:
            with torch.no_grad():
                trainer.model.backbone.model.visual.trunk.blocks[0].mlp.fc2.weight[0, 0] = torch.nan
        return ret

    optimizer.step = step
    with pytest.raises(FloatingPointError) as e:
        trainer.train()
    message = str(e.value)
    assert "not writing checkpoint model_0000001" in message and "NaN or inf" in message
    assert "backbone.model.visual.trunk.blocks.0.mlp.fc2.weight" in message
    assert f"The last checkpoint, {out / 'model_0000000.pth'}, is finite" in message
    assert sorted(p.name for p in out.glob("model_*.pth")) == ["model_0000000.pth"]
    assert (out / "last_checkpoint").read_text() == "model_0000000.pth"
