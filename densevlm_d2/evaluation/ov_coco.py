"""OV-COCO evaluation: detectron2's ``COCOEvaluator`` (official pycocotools ``COCOeval``, not the
compiled fast implementation) plus the open-vocabulary figures: AP50 averaged over the base, the
novel and all classes, as the published F-ViT ``CocoDatasetOV.evaluate`` reports them."""

from __future__ import annotations

import numpy as np
from detectron2.evaluation import COCOEvaluator

from ..data.vocabulary import dataset_vocabulary

__all__ = ["OVCOCOEvaluator", "ap50_per_class"]


def ap50_per_class(precision: np.ndarray) -> np.ndarray:
    """COCOeval's ``eval["precision"]`` (T, R, K, A, M) -> (K,) AP at IoU 0.5, all areas, the
    largest detection limit, in percent; NaN for a class without ground truth."""
    p = precision[0, :, :, 0, -1]  # (recall thresholds, classes)
    valid = p > -1
    with np.errstate(invalid="ignore"):
        return np.where(valid.any(0), (p * valid).sum(0) / valid.sum(0), np.nan) * 100


class OVCOCOEvaluator(COCOEvaluator):
    """``bbox`` (and ``segm``) results with ``AP50-base``, ``AP50-novel`` and ``AP50-all`` added;
    base and novel come from the dataset's vocabulary."""

    def __init__(self, dataset_name: str, tasks=None, distributed: bool = True, output_dir=None):
        super().__init__(dataset_name, tasks, distributed, output_dir, use_fast_impl=False)
        self._novel = set(dataset_vocabulary(dataset_name).novel)

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        results = super()._derive_coco_results(coco_eval, iou_type, class_names)
        if coco_eval is None or not class_names:
            return results
        ap50 = ap50_per_class(coco_eval.eval["precision"])
        novel = np.array([n in self._novel for n in class_names])
        for name, sel in (("all", np.ones_like(novel)), ("base", ~novel), ("novel", novel)):
            values = ap50[sel]
            values = values[~np.isnan(values)]
            results[f"AP50-{name}"] = float(values.mean()) if len(values) else float("nan")
        results.update({f"AP50-{n}": float(v) for n, v in zip(class_names, ap50, strict=True)})
        self._logger.info(
            "%s AP50: base %.2f, novel %.2f, all %.2f",
            iou_type,
            results["AP50-base"],
            results["AP50-novel"],
            results["AP50-all"],
        )
        return results
