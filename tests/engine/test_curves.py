"""Training curves (densevlm_d2.engine.curves): metrics.json read as detectron2 writes it, the
panels, the picture of one or several runs, the hook that draws it, tools/plot_curves.py."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from PIL import Image

from densevlm_d2.engine.curves import PlotCurves, metric_groups, plot_curves, read_metrics
from tests.helpers import run_tool

RECORDS = [
    {"iteration": 19, "total_loss": 4.0, "loss_box": 1.0, "lr": 1e-4, "time": 0.9,
     "densevlm/thing_fraction": 0.12},
    {"iteration": 39, "total_loss": 0.2, "loss_box": float("nan"), "lr": 5e-5, "eta_seconds": 3},
    {"iteration": 39, "sem_seg/mIoU": 47.0, "sem_seg/pACC": 80.0, "flag": True},
]  # fmt: skip


def write_metrics(folder, records=RECORDS, broken=True):
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) for r in records] + (['{"iteration": 59, "total_lo'] if broken else [])
    (folder / "metrics.json").write_text("\n".join(lines) + "\n")
    return folder


def test_metrics_are_read_as_written_and_grouped(tmp_path):
    run = write_metrics(tmp_path / "run")
    records = read_metrics(run)  # a folder or the file; the line cut by a kill is skipped
    assert records == read_metrics(run / "metrics.json") and len(records) == 3
    groups = metric_groups(records)
    assert list(groups) == ["losses", "learning rate", "densevlm", "sem_seg"]
    assert groups["losses"] == {"total_loss": [(19, 4.0), (39, 0.2)], "loss_box": [(19, 1.0)]}
    assert groups["sem_seg"]["sem_seg/mIoU"] == [(39, 47.0)]
    assert "time" not in str(groups) and "flag" not in str(groups)  # timings, booleans left out
    with pytest.raises(FileNotFoundError, match="no metrics file .*missing/metrics.json"):
        read_metrics(tmp_path / "missing")


def test_one_and_several_runs_are_drawn(tmp_path):
    a, b = write_metrics(tmp_path / "a"), write_metrics(tmp_path / "b", RECORDS[:1], False)
    out = plot_curves({"a": a, "b": b}, tmp_path / "cmp.png", title="two runs")
    with Image.open(out) as picture:
        assert picture.width > 1000 and picture.height > 200
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.json").write_text("")
    with pytest.raises(ValueError, match="no metrics to draw"):
        plot_curves({"e": tmp_path / "empty"}, tmp_path / "e.png")
    assert not (tmp_path / "e.png").exists()


def test_the_hook_draws_at_its_period_and_at_the_end(tmp_path):
    run = write_metrics(tmp_path / "run")
    hook = PlotCurves(str(run), period=20)
    hook.trainer = SimpleNamespace(iter=18, max_iter=100)
    hook.after_step()
    assert not (run / "curves.png").exists()  # iteration 19 of a period of 20
    hook.trainer.iter = 19
    hook.after_step()
    assert (run / "curves.png").stat().st_size > 0
    (run / "curves.png").unlink()
    hook.after_train()
    assert (run / "curves.png").is_file()
    PlotCurves(str(tmp_path / "nothing")).after_train()  # no metrics yet: nothing, no error


@pytest.mark.slow
def test_plot_curves_tool(tmp_path):
    a, b = write_metrics(tmp_path / "a"), write_metrics(tmp_path / "b")
    run_tool("plot_curves", str(a))
    assert (a / "curves.png").is_file()
    run_tool("plot_curves", f"mine={a}", f"ref={b / 'metrics.json'}", "--out", tmp_path / "c.png")
    assert (tmp_path / "c.png").is_file()
    proc = run_tool("plot_curves", str(a), str(b), check=False)
    assert proc.returncode == 2 and "--out" in proc.stderr
    proc = run_tool("plot_curves", str(a), str(tmp_path / "x" / "a"), "--out", "o.png", check=False)
    assert proc.returncode == 2 and "two runs are labelled 'a'" in proc.stderr
