"""tools/benchmark_gpu.py dry-run on the CPU with tiny models: the script the GPU check runs must
work end to end and write every figure it promises, before anyone spends GPU time on it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "benchmark_gpu.py"


@pytest.mark.slow
def test_quick_cpu_run_writes_all_figures(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, str(TOOL), "--quick", "--device", "cpu", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["quick"] is True
    assert result["bf16_peak_tflops"] is None  # no peak on a CPU, so no utilisation claimed
    train = result["densevlm"]["float32"]
    assert train["images_per_s"] > 0 and train["s_per_iter"] > 0
    # counted FLOPs: student + teacher forward and student backward of a tiny ViT at 224 px
    assert 1e6 < train["flops_per_image"] < 1e10
    assert result["region_eval"]["images_per_s"] > 0
    assert result["fvit"]["train_images_per_s"] > 0 and result["fvit"]["inference_images_per_s"] > 0
    assert result["mapper_images_per_s"] > 0
