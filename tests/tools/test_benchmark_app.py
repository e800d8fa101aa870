"""tools/benchmark_app.py on the CPU with the demo's CLIP (random weights): it runs and reports
every figure it promises."""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_tool

pytestmark = pytest.mark.slow


def test_benchmark_app_reports_each_step(tmp_path):
    out = tmp_path / "app.json"
    proc = run_tool("benchmark_app", "--demo-dir", str(tmp_path), "--sizes", "--repeats", "1",
                    "--out", str(out))  # fmt: skip
    rows = json.loads(out.read_text())
    (label,) = rows
    assert label.startswith("EVA02-Demo-16 (random)")
    keys = ("model load s", "first text embeddings s", "segment s", "first query s",
            "box query s", "point query s")  # fmt: skip
    assert all(rows[label][k] > 0 for k in keys)
    assert "| model |" in proc.stdout
