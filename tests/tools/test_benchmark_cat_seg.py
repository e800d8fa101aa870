"""tools/benchmark_cat_seg.py on the CPU with the tiny config: it runs and reports what it
promises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import demo.register  # noqa: F401  (the demo model EVA02-Demo-16 of configs/demo/cat_seg.yaml)
from tests.helpers import load_tool

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_benchmark_cat_seg_reports_speed_and_memory(tmp_path):
    bench = load_tool("benchmark_cat_seg")
    out = tmp_path / "bench.json"
    argv = ["--config", str(ROOT / "configs/demo/cat_seg.yaml"), "--batch", "2",
            "--iters", "1", "--images", "1", "--warmup", "0", "--train-classes", "11",
            "--test-classes", "20", "--out", str(out)]  # fmt: skip
    result = bench.main(argv)
    assert json.loads(out.read_text()) == result
    assert result["clip"] == "EVA02-Demo-16" and result["clip_resolution"] == 128
    assert result["train"]["classes"] == 11 and result["train"]["crop"] == [128, 128]
    assert result["inference"]["classes"] == 20 and result["inference"]["sliding_window"]
    for part in ("train", "inference"):
        assert result[part]["images_per_s"] > 0 and result[part]["peak_memory_mib"] > 0
