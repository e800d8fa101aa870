"""The demo's table, bar chart and before/after dense predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["bar_chart", "dense_predictions", "format_table"]

_ORDER = ("student", "teacher", "clipself", "densevlm", "map_student", "map_densevlm")
_LABELS = {
    "student": "pretrained student",
    "teacher": "teacher",
    "clipself": "CLIPSelf",
    "densevlm": "DenseVLM",
    "map_student": "SigLIP-style student",
    "map_densevlm": "SigLIP-style + DenseVLM",
}


def format_table(table: dict) -> str:
    """Markdown table of box and mask top-1/top-5 mean accuracy (thing, stuff), foreground bias
    and training-free segmentation (mIoU, pixel accuracy; "-" where a model has none)."""
    head = (
        "| model | boxes thing | boxes stuff | masks thing | masks stuff | fg-bias (masks) "
        "| seg. mIoU | seg. pAcc |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    rows = []
    for name in _ORDER:
        if name not in table:
            continue
        m = table[name]

        def cell(kind, split, m=m):
            return f"{m[f'{kind}.{split}.macc1']:.1f} / {m[f'{kind}.{split}.macc5']:.1f}"

        def seg(key, m=m):
            return f"{m[key]:.1f}" if key in m else "-"

        rows.append(
            f"| {_LABELS[name]} | {cell('rois', 'thing')} | {cell('rois', 'stuff')} | "
            f"{cell('maskpool', 'thing')} | {cell('maskpool', 'stuff')} | "
            f"{m['maskpool.fg_bias']:.1f} | {seg('sem_seg.mIoU')} | {seg('sem_seg.pACC')} |"
        )
    return (
        "\n".join([head, *rows]) + "\n(top-1 / top-5 mean accuracy, %; fg-bias: % of stuff "
        "regions classified as a thing; seg.: training-free semantic segmentation of the val "
        "images, mean IoU over the 11 classes and pixel accuracy, %)"
    )


def bar_chart(table: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [
        ("rois.thing.macc1", "boxes, things"),
        ("rois.stuff.macc1", "boxes, stuff"),
        ("maskpool.thing.macc1", "masks, things"),
        ("maskpool.stuff.macc1", "masks, stuff"),
        ("maskpool.fg_bias", "fg-bias (masks)"),
        ("sem_seg.mIoU", "segmentation mIoU"),
    ]
    names = [n for n in _ORDER if n in table]
    metrics = [(k, label) for k, label in metrics if all(k in table[n] for n in names)]
    fig, ax = plt.subplots(figsize=(10.5, 4.2), dpi=110)
    width = 0.8 / len(names)
    x = np.arange(len(metrics))
    for i, name in enumerate(names):
        values = [table[name][k] for k, _ in metrics]
        bars = ax.bar(x + (i - (len(names) - 1) / 2) * width, values, width, label=_LABELS[name])
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(x, [label for _, label in metrics])
    ax.set_ylabel("top-1 mean accuracy / mIoU (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Region classification and segmentation in the demo world (val split)")
    # below the axes: the bars reach the top
    ax.legend(fontsize=8, ncols=3, loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _gt_labels(world: Path, image_info: dict, annotation: dict, classes: list[str]) -> np.ndarray:
    from panopticapi.utils import rgb2id

    pan = rgb2id(
        np.asarray(Image.open(world / "panoptic_val" / annotation["file_name"]), dtype=np.uint8)
    )
    ids = sorted(
        c["id"] for c in json.loads((world / "panoptic_val.json").read_text())["categories"]
    )
    labels = np.full(pan.shape, len(classes), np.int64)  # void
    for seg in annotation["segments_info"]:
        labels[pan == seg["id"]] = ids.index(seg["category_id"])
    return labels


def dense_predictions(
    models: Path, world: Path, out: Path, env: dict, count: int = 4
) -> list[Path]:
    """For ``count`` val images: image | ground truth | pretrained student | CLIPSelf | DenseVLM,
    every token classified against the world's classes; one PNG per image."""
    import os

    import torch
    from PIL import ImageDraw

    import densevlm_d2
    from densevlm_d2.visualization import dense_prediction, draw_dense_prediction

    from .register import CATEGORIES

    os.environ.setdefault("DENSEVLM_CACHE", env.get("DENSEVLM_CACHE", ""))
    classes = [c["name"] for c in sorted(CATEGORIES, key=lambda c: c["id"])]
    colors = [c["color"] for c in sorted(CATEGORIES, key=lambda c: c["id"])]
    data = json.loads((world / "panoptic_val.json").read_text())
    names = [n for n in ("student", "clipself", "densevlm") if (models / f"{n}.pt").exists()]
    encoders = {}
    for name in names:
        enc = densevlm_d2.load_clip("EVA02-Demo-16", models / f"{name}.pt", image_size=128)
        encoders[name] = (enc, enc.text_embeddings(classes))
    titles = ["image", "ground truth"] + [_LABELS[n] for n in names]
    paths = []
    for info, ann in list(zip(data["images"], data["annotations"], strict=True))[:count]:
        image = Image.open(world / "val" / info["file_name"]).convert("RGB")
        gt = torch.from_numpy(_gt_labels(world, info, ann, classes))
        panels = [np.asarray(image), draw_dense_prediction(image, gt, classes, colors=colors)]
        for name in names:
            enc, emb = encoders[name]
            labels = dense_prediction(enc, image, emb)
            panels.append(draw_dense_prediction(image, labels, classes, colors=colors))
        scale = 2
        w, h = image.width * scale, image.height * scale
        canvas = Image.new("RGB", (len(panels) * (w + 10) - 10, h + 24), "white")
        draw = ImageDraw.Draw(canvas)
        for i, (panel, title) in enumerate(zip(panels, titles, strict=True)):
            canvas.paste(Image.fromarray(panel).resize((w, h), Image.NEAREST), (i * (w + 10), 24))
            draw.text((i * (w + 10) + 4, 6), title, fill="black")
        path = out / f"dense_{info['file_name'].replace('.jpg', '.png')}"
        canvas.save(path)
        paths.append(path)
    return paths
