"""Training curves: detectron2's ``metrics.json`` drawn as one picture per run, or several runs
overlaid to compare them.

``metrics.json`` holds one json object per logged iteration (``iteration``, the losses, ``lr``,
timings, a model's own scalars such as ``densevlm/thing_fraction``) and the evaluation results put
at the iterations they were computed (``sem_seg/mIoU``, ...). :func:`plot_curves` draws the
losses (log scale when they span a decade or more), the learning rate, and one panel per other
scalar group (the part of a key before its ``/``), each against the iteration;
:class:`PlotCurves` writes ``curves.png`` beside ``metrics.json`` when training ends (and at every
checkpoint period), ``tools/plot_curves.py`` compares runs.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

from detectron2.engine import HookBase
from detectron2.utils import comm

from ..utils.files import atomic_write

__all__ = ["PlotCurves", "metric_groups", "plot_curves", "read_metrics"]

logger = logging.getLogger(__name__)

#: the panels drawn first, in this order
FIRST_PANELS = ("losses", "learning rate")
#: timings: not curves of the training's progress
SKIPPED = {"iteration", "time", "data_time", "eta_seconds", "rank_data_time"}


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a ``metrics.json`` (a file or a run's output folder), in file order. A line
    that is not a json object (a run killed mid-write) is skipped; a missing file is a
    ``FileNotFoundError`` naming it."""
    path = Path(path)
    if path.is_dir() or path.suffix != ".json":  # a run's folder
        path = path / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no metrics file {path} (a training run writes OUTPUT_DIR/metrics.json)"
        )
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("iteration"), int | float):
            records.append(record)
    return records


def metric_groups(records: list[dict]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """``{panel: {key: [(iteration, value), ...]}}``: the panels ``losses`` (keys with "loss"),
    ``learning rate`` and one per prefix of the other numeric keys."""
    groups: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        it = float(record["iteration"])
        for key, value in record.items():
            if key in SKIPPED or not isinstance(value, int | float) or isinstance(value, bool):
                continue
            if not math.isfinite(value):
                continue
            if "loss" in key:
                panel = "losses"
            elif key == "lr":
                panel = "learning rate"
            else:
                panel = key.split("/")[0] if "/" in key else "other"
            groups[panel][key].append((it, float(value)))
    return {p: dict(groups[p]) for p in _panel_order(groups)}


def _panel_order(panels) -> list[str]:
    """The losses, the learning rate, then the other panels by name."""
    return [p for p in FIRST_PANELS if p in panels] + sorted(
        p for p in panels if p not in FIRST_PANELS
    )


def plot_curves(
    runs: Mapping[str, str | os.PathLike | list[dict]],
    out: str | os.PathLike,
    title: str | None = None,
    max_series: int = 8,
) -> Path:
    """Draw each run's metrics (``{label: metrics.json, run folder or records}``) into ``out``
    (written atomically). With several runs, a series is ``label: key`` and runs share panels."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    panels: dict[str, dict[str, list]] = defaultdict(dict)
    for label, source in runs.items():
        records = source if isinstance(source, list) else read_metrics(source)
        for panel, series in metric_groups(records).items():
            for key, points in series.items():
                name = f"{label}: {key}" if len(runs) > 1 else key
                panels[panel][name] = points
    if not panels:
        where = ", ".join(
            label if isinstance(src, list) else f"{label} ({src})" for label, src in runs.items()
        )
        raise ValueError(f"no metrics to draw in {where}")
    names = _panel_order(panels)
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    axes = list(axes.flat)
    for ax, panel in zip(axes[: len(names)], names, strict=True):
        series = list(panels[panel].items())
        for name, points in series[:max_series]:
            xs, ys = zip(*sorted(points), strict=True)
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=name)
        values = [v for _, points in series[:max_series] for _, v in points]
        if panel == "losses" and min(values) > 0 and max(values) / min(values) >= 10:
            ax.set_yscale("log")
        more = f" (+{len(series) - max_series} more)" if len(series) > max_series else ""
        ax.set_title(panel + more, fontsize=10)
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[len(names) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    out = Path(out)
    with atomic_write(out) as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)
    return out


class PlotCurves(HookBase):
    """Draw ``OUTPUT_DIR/curves.png`` from ``OUTPUT_DIR/metrics.json`` every ``period`` iterations
    (0: only at the end) and when training ends, on the main process. Added after detectron2's
    writers, so that the file already holds the last iteration. A drawing that fails is logged,
    never stops training."""

    def __init__(self, output_dir: str, period: int = 0):
        self.output_dir = Path(output_dir)
        self.period = period

    def _draw(self) -> None:
        if not comm.is_main_process() or not (self.output_dir / "metrics.json").is_file():
            return
        try:
            plot_curves({self.output_dir.name: self.output_dir}, self.output_dir / "curves.png",
                        title=str(self.output_dir))  # fmt: skip
        except (ValueError, OSError) as e:
            logger.warning("curves.png not drawn: %s", e)

    def after_step(self):
        it = self.trainer.iter + 1
        if self.period > 0 and it % self.period == 0 and it < self.trainer.max_iter:
            self._draw()

    def after_train(self):
        self._draw()
