"""Two "machines" on this host: two tools/train_net.py launches with --num-machines 2, one CPU
process each, meet over tcp and train as one (the same weights as two processes on one machine),
also when tools/slurm/train.sbatch starts them (stand-ins for srun and scontrol); an option written
among the config options is an error, not a silently lost rank; processes that cannot meet (a rank
out of range, nobody at the address, a machine that never comes) end with an error naming the
address, the rank, the world size and the timeout, after --dist-timeout, not 30 minutes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch

from densevlm_d2.engine.curves import read_metrics
from tests.helpers import ROOT, coco_train_photos, run_tool

pytestmark = pytest.mark.slow

OPTS = ("MODEL.CLIP.RANDOM_INIT", "True", "DATASETS.TEST", "()", "SEED", "0",
        "SOLVER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "100")  # fmt: skip
CONFIG = ("--config-file", "configs/coco/tiny_densevlm_cpu.yaml")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return coco_train_photos(tmp_path_factory.mktemp("data"), 4)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _weights(out):
    state = torch.load(out / "clip_final_open_clip.pt", weights_only=True)
    return state.get("state_dict", state)


@pytest.fixture(scope="module")
def one_machine(data, tmp_path_factory):
    """The final weights of two processes on one machine (the same ranks, seeds and batch split)."""
    out = tmp_path_factory.mktemp("one")
    run_tool("train_net", *CONFIG, "--num-gpus", "2", "--dist-url", "auto", *OPTS,
             "OUTPUT_DIR", out, datasets=data)  # fmt: skip
    return _weights(out)


def _same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_machines_train_as_one(data, one_machine, tmp_path):
    url = f"tcp://127.0.0.1:{_port()}"
    env = dict(os.environ, DETECTRON2_DATASETS=str(data), PYTHONPATH=str(ROOT))

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
    assert _same_weights(_weights(tmp_path / "machine0"), one_machine)


SBATCH = ROOT / "tools" / "slurm" / "train.sbatch"
#: Slurm's srun, standing in on one host: the task once per node, each with its SLURM_NODEID
SRUN = """#!/bin/bash
while [[ $1 == --* ]]; do shift; done
pids=()
for ((node = 0; node < SLURM_NNODES; node++)); do
  SLURM_NODEID=$node "$@" > "$NODE_LOGS/node$node.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
"""


def _stand_ins(folder):
    """``srun``, ``scontrol`` (the node list's first host is this one) and ``python``."""
    folder.mkdir()
    for name, text in [("srun", SRUN), ("scontrol", "#!/bin/sh\necho 127.0.0.1\n"),
                       ("python", f'#!/bin/sh\nexec {sys.executable} "$@"\n')]:  # fmt: skip
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)


def test_the_slurm_script_is_valid_bash_and_the_one_documented():
    subprocess.run(["bash", "-n", str(SBATCH)], check=True)
    text = SBATCH.read_text()
    assert "#SBATCH --nodes=" in text and text.count("\nsrun ") == 1
    doc = (ROOT / "docs" / "training.md").read_text()
    shown = doc[doc.index("MASTER_ADDR=$(scontrol") :].split("```")[0]
    assert shown.split("\n", 1)[1] in text  # its srun line, as written there


def test_the_slurm_script_trains_as_one(data, one_machine, tmp_path):
    """The job script as Slurm runs it on two nodes: its one srun line, once per node."""
    _stand_ins(tmp_path / "bin")
    env = dict(os.environ, DETECTRON2_DATASETS=str(data), PYTHONPATH=str(ROOT),
               PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", NODE_LOGS=str(tmp_path),
               SLURM_NNODES="2", SLURM_JOB_NODELIST="node[1-2]", PORT=str(_port()),
               CONFIG=CONFIG[1], GPUS_PER_NODE="1", DIST_TIMEOUT="300")  # fmt: skip
    cmd = ["bash", str(SBATCH), *OPTS, "OUTPUT_DIR", str(tmp_path / "run")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    logs = [(tmp_path / f"node{n}.log").read_text() for n in (0, 1)]
    assert proc.returncode == 0, proc.stderr[-2000:] + logs[0][-3000:] + logs[1][-3000:]
    assert "Rank of current process: 0. World size: 2" in logs[0]
    rank1 = (tmp_path / "run" / "log.txt.rank1").read_text()  # one output folder, shared
    assert "Rank of current process: 1. World size: 2" in rank1
    assert _same_weights(_weights(tmp_path / "run"), one_machine)


def _cannot_meet(*options, timeout=60):
    proc = run_tool("train_net", *CONFIG, "--num-gpus", "1", "--num-machines", "2", *options,
                    *OPTS, check=False, timeout=timeout)  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.stderr.strip().splitlines()[-1]


def test_a_machine_rank_out_of_range_is_an_error():
    url = f"tcp://127.0.0.1:{_port()}"
    error = _cannot_meet("--machine-rank", "2", "--dist-url", url)
    assert "--machine-rank 2 is out of range for --num-machines 2" in error


@pytest.mark.parametrize(
    "rank, cause",
    [("1", "timed out after 3000ms while trying to connect to (127.0.0.1"),  # nobody listens
     ("0", "1/2 clients joined")],  # the other machine never comes
)  # fmt: skip
def test_processes_that_cannot_meet_end_with_a_clear_error(rank, cause):
    url = f"tcp://127.0.0.1:{_port()}"
    error = _cannot_meet("--machine-rank", rank, "--dist-url", url, "--dist-timeout", "3")
    assert f"could not meet at {url} within 3 s: this process is rank {rank} of world size 2" in (
        error
    )
    assert cause in error


def test_an_unknown_host_is_an_error():
    error = _cannot_meet("--machine-rank", "1", "--dist-url", "tcp://no-such-host.invalid:29500")
    assert "cannot resolve the host 'no-such-host.invalid'" in error


def test_an_option_among_the_config_options_is_an_error(data, tmp_path):
    proc = run_tool("train_net", *CONFIG, *OPTS, "--machine-rank", "1", datasets=data,
                    check=False)  # fmt: skip
    assert proc.returncode == 2
    assert "--machine-rank comes after the config options" in proc.stderr


def test_eval_sem_seg_ends_with_the_same_clear_error(tmp_path):
    """The other tool that launches processes: the same launch and error line."""
    url = f"tcp://127.0.0.1:{_port()}"
    proc = run_tool("eval_sem_seg", "--clip", "eva02_b16", "--benchmarks", "voc21",
                    "--output-dir", tmp_path, "--num-machines", "2", "--machine-rank", "1",
                    "--dist-url", url, "--dist-timeout", "3", check=False, timeout=60)  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("eval_sem_seg.py: error: ")
    assert f"could not meet at {url} within 3 s: this process is rank 1 of world size 2" in error
