"""tools/benchmark_sem_seg.py on the CPU with a tiny CLIP: it runs and reports what it promises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import load_tool

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_benchmark_sem_seg_reports_speed_and_memory(tmp_path):
    bench = load_tool("benchmark_sem_seg")
    out = tmp_path / "bench.json"
    argv = ["--config", str(ROOT / "configs/sem_seg/eva02_b16/voc21.yaml"), "--device", "cpu",
            "--images", "2", "--warmup", "0", "--window-batch", "4", "--out", str(out),
            "MODEL.CLIP.MODEL_NAME", "EVA02-Tiny-16", "MODEL.DENSE_SEG.SHORT_SIDE", "96",
            "MODEL.DENSE_SEG.WINDOW", "64", "MODEL.DENSE_SEG.STRIDE", "32"]  # fmt: skip
    result = bench.main(argv)
    assert json.loads(out.read_text()) == result
    assert result["classes"] == 21 and result["queries"] > 21  # VOC-21's background synonyms
    for label in ("batched", "one_window_at_a_time"):
        assert result[label]["images_per_s"] > 0 and result[label]["peak_memory_mib"] > 0
    assert result["speedup_batched"] > 0
