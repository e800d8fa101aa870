"""OV-LVIS evaluation: detectron2's ``LVISEvaluator`` (the official ``lvis`` API: box and mask AP,
APr, APc, APf over at most ``TEST.DETECTIONS_PER_IMAGE`` detections per image, 300 as published),
with a table of the results beside the published numbers."""

from __future__ import annotations

import math

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import LVISEvaluator

__all__ = ["OVLVISEvaluator", "PUBLISHED_OV_LVIS", "ov_lvis_table"]

#: Published OV-LVIS figures of F-ViT (mask AP of the rare classes, LVIS v1 val), not run here:
#: (detector and CLIP, task, metric, value)
PUBLISHED_OV_LVIS = (
    ("F-ViT, CLIPSelf EVA02-CLIP-B/16", "segm", "APr", 25.3),
    ("F-ViT, CLIPSelf EVA02-CLIP-L/14-336", "segm", "APr", 34.9),
    ("F-ViT, DeCLIP EVA02-CLIP-L/14-336", "segm", "APr", 40.3),
)
METRICS = ("AP", "APr", "APc", "APf", "AP50")


def _fmt(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"


def ov_lvis_table(results: dict, dataset_name: str = "") -> str:
    """A text table of ``{"bbox": {...}, "segm": {...}}`` (AP, APr, APc, APf, AP50 in %) with the
    published mask APr figures (:data:`PUBLISHED_OV_LVIS`) below it."""
    header = ["", *METRICS]
    rows = [
        [f"{'box' if task == 'bbox' else 'mask'} (this run)"]
        + [_fmt(results[task].get(m)) for m in METRICS]
        for task in ("bbox", "segm")
        if task in results
    ]
    for name, task, metric, value in PUBLISHED_OV_LVIS:
        label = f"{'mask' if task == 'segm' else 'box'} published: {name}"
        rows.append([label] + [_fmt(value) if m == metric else "" for m in METRICS])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [f"OV-LVIS results{f' on {dataset_name}' if dataset_name else ''} (%):"]
    for r in [header, *rows]:
        lines.append(
            "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                               enumerate(zip(r, widths, strict=True))) + " |"
        )  # fmt: skip
        if r is header:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines.append("(published figures: not run here)")
    return "\n".join(lines)


class OVLVISEvaluator(LVISEvaluator):
    """detectron2's ``LVISEvaluator`` for an OV-LVIS dataset (``evaluator_type="ov_lvis"``); logs
    :func:`ov_lvis_table` after the evaluation."""

    def __init__(
        self,
        dataset_name: str,
        output_dir: str | None = None,
        max_dets_per_image: int = 300,
        distributed: bool = True,
    ):
        try:
            import lvis  # noqa: F401
        except ImportError as e:
            fix = (
                "pip install opencv-python-headless (the LVIS API imports cv2)"
                if e.name == "cv2"
                else "pip install --no-deps lvis==0.5.3 (tools/install_extras.py installs it)"
            )
            raise ImportError(
                f"OV-LVIS evaluation uses the official LVIS API, which does not import ({e}): {fix}"
            ) from e
        # the category-id mapping is set when the dataset is read
        if not MetadataCatalog.get(dataset_name).get("thing_dataset_id_to_contiguous_id", None):
            DatasetCatalog.get(dataset_name)
        super().__init__(
            dataset_name,
            tasks=None,
            distributed=distributed,
            output_dir=output_dir,
            max_dets_per_image=max_dets_per_image,
        )
        self._dataset_name = dataset_name

    def evaluate(self):
        results = super().evaluate()
        if results and any(t in results for t in ("bbox", "segm")):
            self._logger.info("\n" + ov_lvis_table(results, self._dataset_name))
        return results
