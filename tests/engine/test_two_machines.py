"""Two "machines" on this host: two tools/train_net.py launches with --num-machines 2, one CPU
process each, meet over tcp and train as one (the same weights as two processes on one machine); an
option written among the config options is an error, not a silently lost rank."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import torch

from densevlm_d2.engine.curves import read_metrics
from tests.helpers import ROOT, run_tool

pytestmark = pytest.mark.slow

OPTS = ("MODEL.CLIP.RANDOM_INIT", "True", "DATASETS.TEST", "()", "SEED", "0",
        "SOLVER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "100")  # fmt: skip
CONFIG = ("--config-file", "configs/coco/tiny_densevlm_cpu.yaml")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    images = root / "coco" / "train2017"
    images.mkdir(parents=True)
    photo = (ROOT / "densevlm_d2" / "assets" / "chelsea.jpg").read_bytes()
    for i in range(4):
        (images / f"{i:012d}.jpg").write_bytes(photo)
    return root


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _weights(out):
    state = torch.load(out / "clip_final_open_clip.pt", weights_only=True)
    return state.get("state_dict", state)


def test_two_machines_train_as_one(data, tmp_path):
    url = f"tcp://127.0.0.1:{_port()}"
    env = dict(__import__("os").environ, DETECTRON2_DATASETS=str(data), PYTHONPATH=str(ROOT))

    def machine(rank):
        cmd = [sys.executable, str(ROOT / "tools" / "train_net.py"), *CONFIG, "--num-gpus", "1",
               "--num-machines", "2", "--machine-rank", str(rank), "--dist-url", url, *OPTS,
               "OUTPUT_DIR", str(tmp_path / f"machine{rank}")]  # fmt: skip
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)  # fmt: skip

    second, first = machine(1), machine(0)
    logs = [p.communicate(timeout=600)[0] for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, logs[0][-3000:] + logs[1][-3000:]
    assert "Rank of current process: 0. World size: 2" in logs[0]
    # the second machine logs to its own file, and writes no checkpoint: the main process does
    rank1 = (tmp_path / "machine1" / "log.txt.rank1").read_text()
    assert "Rank of current process: 1. World size: 2" in rank1
    assert (tmp_path / "machine0" / "model_final.pth").is_file()
    losses = [r["total_loss"] for r in read_metrics(tmp_path / "machine0") if "total_loss" in r]
    assert losses and all(torch.isfinite(torch.tensor(losses)))  # it trained
    assert not (tmp_path / "machine1" / "model_final.pth").exists()
    # the same weights as two processes on one machine (the same ranks, seeds and batch split)
    run_tool("train_net", *CONFIG, "--num-gpus", "2", "--dist-url", "auto", *OPTS,
             "OUTPUT_DIR", tmp_path / "one", datasets=data)  # fmt: skip
    a, b = _weights(tmp_path / "machine0"), _weights(tmp_path / "one")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_an_option_among_the_config_options_is_an_error(data, tmp_path):
    proc = run_tool("train_net", *CONFIG, *OPTS, "--machine-rank", "1", datasets=data,
                    check=False)  # fmt: skip
    assert proc.returncode == 2
    assert "--machine-rank comes after the config options" in proc.stderr
