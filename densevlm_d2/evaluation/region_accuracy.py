"""Region-classification mean accuracy, as the published DenseVLM/CLIPSelf evaluation measures it.

For every region type (``rois`` = boxes, ``maskpool`` = masks, ``crops``): the accuracy of each
class over all its regions in the split (top-1: the highest score is the class; top-5: the class is
among the 5 highest), then the unweighted mean over the classes that occur, for thing classes, stuff
classes and all classes. Also the foreground-bias figure: the share of stuff regions whose top-1
class is a thing class. Computed in float64 from per-region records gathered across processes
(detectron2's inference sampler shards the dataset without duplicates; records are keyed by image
and segment id, and any duplicate is dropped). Values are percentages. The published code casts each
per-class accuracy to fp16 before averaging and reports no "all" score; otherwise the numbers are
the same (``rois.thing.macc1`` here = ``rois.thing.macc1`` there, times 100).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections import OrderedDict

import numpy as np
import torch
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from tabulate import tabulate

from ..data.vocabulary import dataset_vocabulary
from ..utils.files import atomic_write

__all__ = ["RegionAccuracyEvaluator", "region_accuracy"]

logger = logging.getLogger(__name__)

_SPLITS = ("thing", "stuff", "all")


def region_accuracy(
    gt: np.ndarray,
    correct1: np.ndarray,
    correct5: np.ndarray,
    pred_is_thing: np.ndarray,
    class_is_thing: np.ndarray,
) -> tuple[dict, list]:
    """Metrics of one region type from per-region records.

    Args:
        gt: (R,) ground-truth class indices. correct1 / correct5: (R,) booleans.
        pred_is_thing: (R,) whether the top-1 class is a thing class.
        class_is_thing: (K,) thing flag of every class.
    Returns:
        (metrics, per-class rows) with metrics ``{split}.macc1``, ``{split}.macc5`` for thing, stuff
        and all, and ``fg_bias``; classes without regions are left out of the means.
    """
    num_classes = len(class_is_thing)
    count = np.bincount(gt, minlength=num_classes).astype(np.float64)
    hits1 = np.bincount(gt, weights=correct1.astype(np.float64), minlength=num_classes)
    hits5 = np.bincount(gt, weights=correct5.astype(np.float64), minlength=num_classes)
    present = count > 0
    acc1 = np.divide(hits1, count, out=np.zeros(num_classes), where=present)
    acc5 = np.divide(hits5, count, out=np.zeros(num_classes), where=present)
    metrics = {}
    for split in _SPLITS:
        sel = (
            present
            & {
                "thing": class_is_thing,
                "stuff": ~class_is_thing,
                "all": np.ones(num_classes, bool),
            }[split]
        )
        metrics[f"{split}.macc1"] = 100.0 * acc1[sel].mean() if sel.any() else float("nan")
        metrics[f"{split}.macc5"] = 100.0 * acc5[sel].mean() if sel.any() else float("nan")
    stuff_regions = ~class_is_thing[gt]
    metrics["fg_bias"] = (
        100.0 * pred_is_thing[stuff_regions].mean() if stuff_regions.any() else float("nan")
    )
    rows = [
        (int(c), int(count[c]), 100.0 * acc1[c], 100.0 * acc5[c]) for c in np.nonzero(present)[0]
    ]
    return metrics, rows


def _json_number(v: float) -> float | None:
    return None if np.isnan(v) else float(v)


class RegionAccuracyEvaluator(DatasetEvaluator):
    """Scores ``region_scores`` of :class:`~densevlm_d2.modeling.CLIPRegionClassifier` outputs."""

    def __init__(self, dataset_name: str, output_dir: str | None = None, distributed: bool = True):
        self.dataset_name = dataset_name
        self.output_dir = output_dir
        self.distributed = distributed
        vocabulary = dataset_vocabulary(dataset_name)
        self.classes = list(vocabulary.names)
        is_thing = vocabulary.thing_flags(f"region accuracy on {dataset_name}")
        self.class_is_thing = np.asarray(is_thing, dtype=bool)
        self.reset()

    def reset(self):
        self._records: list[dict] = []
        self._empty_skipped: dict[str, int] = {}  # image id -> stuff segments without pixels

    def process(self, inputs, outputs):
        thing = torch.as_tensor(self.class_is_thing)
        for inp, out in zip(inputs, outputs, strict=True):
            regions = inp["regions"]
            if regions.get("empty_segments_skipped"):
                self._empty_skipped[str(inp["image_id"])] = regions["empty_segments_skipped"]
            if len(regions["classes"]) == 0:
                continue
            gt = regions["classes"].cpu()
            rec = {
                "image_id": inp["image_id"],
                "segment_ids": regions["segment_ids"].numpy(),
                "gt": gt.numpy(),
            }
            for kind, scores in out["region_scores"].items():
                top = scores.cpu().topk(min(5, scores.shape[1]), dim=1).indices
                rec[kind] = np.stack(
                    [
                        (top[:, 0] == gt).numpy(),
                        (top == gt[:, None]).any(1).numpy(),
                        thing[top[:, 0]].numpy(),
                    ]
                )
            self._records.append(rec)

    def _gathered(self) -> tuple[list[dict], dict[str, int]] | None:
        if not self.distributed or comm.get_world_size() == 1:
            return self._records, self._empty_skipped
        comm.synchronize()
        parts = comm.gather((self._records, self._empty_skipped), dst=0)
        if not comm.is_main_process():
            return None
        skipped = {}
        for _, part in parts:
            skipped.update(part)
        return list(itertools.chain(*(records for records, _ in parts))), skipped

    def evaluate(self):
        gathered = self._gathered()
        if gathered is None:
            return {}
        records, empty_skipped = gathered
        self._num_empty_skipped = sum(empty_skipped.values())
        if self._num_empty_skipped:
            logger.warning(
                "%s: %d stuff segment(s) in %d image(s) have no pixels in their panoptic PNG "
                "(painted over by things, as Mask2Former's ADE20K preparation writes them): "
                "skipped, not scored",
                self.dataset_name,
                self._num_empty_skipped,
                len(empty_skipped),
            )
        seen, unique = set(), []
        for rec in records:  # one record per image; the inference sampler should never repeat one
            key = (str(rec["image_id"]), tuple(rec["segment_ids"].tolist()))
            if key not in seen:
                seen.add(key)
                unique.append(rec)
        if len(unique) < len(records):
            logger.warning("dropped %d duplicate image records", len(records) - len(unique))
        if not unique:
            logger.warning("no regions to evaluate in %s", self.dataset_name)
            return {}
        kinds = [k for k in ("rois", "maskpool", "crops") if k in unique[0]]
        gt = np.concatenate([r["gt"] for r in unique])
        results, per_class = OrderedDict(), {}
        for kind in kinds:
            c1, c5, pred_thing = np.concatenate([r[kind] for r in unique], axis=1)
            results[kind], rows = region_accuracy(gt, c1, c5, pred_thing, self.class_is_thing)
            per_class[kind] = rows
        self._report(results, per_class, gt, len(unique))
        return results

    def _report(self, results, per_class, gt, num_images):
        n_thing = int(self.class_is_thing[gt].sum())
        header = [
            "regions",
            "thing top1",
            "thing top5",
            "stuff top1",
            "stuff top5",
            "all top1",
            "all top5",
            "fg-bias",
        ]
        table = [
            [k] + [r[f"{s}.macc{t}"] for s in _SPLITS for t in (1, 5)] + [r["fg_bias"]]
            for k, r in results.items()
        ]
        logger.info(
            "Region mean accuracy (%%) on %s: %d images, %d thing + %d stuff regions\n%s",
            self.dataset_name,
            num_images,
            n_thing,
            len(gt) - n_thing,
            tabulate(table, headers=header, floatfmt=".2f", tablefmt="pipe"),
        )
        kinds = list(per_class)
        rows = {}
        for kind in kinds:
            for c, n, a1, a5 in per_class[kind]:
                row = rows.setdefault(
                    c,
                    {
                        "class": self.classes[c],
                        "is_thing": bool(self.class_is_thing[c]),
                        "regions": n,
                    },
                )
                row[f"{kind}.acc1"], row[f"{kind}.acc5"] = a1, a5
        logger.info(
            "Per-class accuracy (%%) on %s:\n%s",
            self.dataset_name,
            tabulate(
                [rows[c] for c in sorted(rows)], headers="keys", floatfmt=".1f", tablefmt="pipe"
            ),
        )
        if self.output_dir:
            os.makedirs(self.output_dir, exist_ok=True)
            path = os.path.join(self.output_dir, "region_macc.json")
            payload = {
                "dataset": self.dataset_name,
                "num_images": num_images,
                "num_regions": {"thing": n_thing, "stuff": len(gt) - n_thing},
                "empty_segments_skipped": self._num_empty_skipped,
                "metrics": {
                    f"{k}.{m}": _json_number(v) for k, r in results.items() for m, v in r.items()
                },
                "per_class": [rows[c] for c in sorted(rows)],
            }
            with atomic_write(path, binary=False) as f:
                json.dump(payload, f, indent=1)
            logger.info("wrote %s", path)
