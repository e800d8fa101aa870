"""Semantic-segmentation metrics: detectron2's ``SemSegEvaluator``, with readable class names and
a JSON summary.

Metrics are detectron2's (mIoU, fwIoU, mACC, pACC, per-class IoU and accuracy, in %). A class that
is neither in the ground truth nor predicted does not count in mIoU; one that is predicted but
absent from the ground truth counts with IoU 0 (the convention of mmsegmentation's IoUMetric
too). Written to the output folder: ``sem_seg_metrics.json`` (the results, the dataset and the
number of images) and, with ``save_predictions``, detectron2's ``sem_seg_predictions.json`` (RLE
per class and image) and ``sem_seg_evaluation.pth``.

A dataset whose model is queried with more names than are scored (metadata
``surplus_prediction_class`` s, VOC-20b: 59 queries, 21 classes) has its predictions, the argmax
over all of the output's channels, mapped to ``min(prediction, s)`` before they are scored, as
CAT-Seg's ``VOCbEvaluator`` does. Any other output must have one channel per scored class:
detectron2 would silently drop or misplace the predictions of extra channels, so a mismatch is a
ValueError.
"""

from __future__ import annotations

import json
import os

import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import SemSegEvaluator
from detectron2.utils import comm

__all__ = ["SemSegMetricsEvaluator"]


class SemSegMetricsEvaluator(SemSegEvaluator):
    """``SemSegEvaluator`` whose per-class keys use each class's display name (metadata
    ``display_classes``, else the first of its ``", "``-separated synonyms), which writes
    ``sem_seg_metrics.json`` and which scores surplus query classes as the dataset's metadata
    ``surplus_prediction_class`` says (see the module docstring)."""

    def __init__(
        self,
        dataset_name: str,
        output_dir: str | None = None,
        *,
        distributed: bool = True,
        save_predictions: bool = False,
    ):
        super().__init__(dataset_name, distributed=distributed, output_dir=output_dir)
        meta = MetadataCatalog.get(dataset_name)
        names = list(meta.get("display_classes", None) or [])
        if len(names) != self._num_classes:
            names = [n.split(",")[0].strip() for n in self._class_names]
        # a display name used twice keeps its full string, so that no class's key is lost
        self._class_names = [
            n if names.count(n) == 1 else full
            for n, full in zip(names, self._class_names, strict=True)
        ]
        self._save_predictions = save_predictions
        self._num_images = 0
        self._surplus = meta.get("surplus_prediction_class", None)
        query_classes = meta.get("query_classes", None)
        self._num_queries = len(query_classes) if query_classes else None
        if self._surplus is not None and self._surplus != self._num_classes - 1:
            raise ValueError(
                f"dataset {dataset_name!r}: surplus_prediction_class {self._surplus} must be its "
                f"last class index, {self._num_classes - 1}"
            )

    def reset(self):
        super().reset()
        self._num_images = 0

    def process(self, inputs, outputs):
        outputs = [self._scored_output(out) for out in outputs]
        super().process(inputs, outputs)
        self._num_images += len(inputs)

    def _scored_output(self, output: dict) -> dict:
        """``output`` as detectron2 scores it: one channel per scored class, whose argmax is the
        prediction. With surplus query classes, the argmax over all channels mapped to
        ``min(argmax, surplus_prediction_class)``, one-hot (uint8)."""
        scores = output["sem_seg"]
        channels = scores.shape[0]
        if self._surplus is None:
            if channels != self._num_classes:
                raise ValueError(
                    f"dataset {self._dataset_name!r} scores {self._num_classes} classes, but the "
                    f"model's output has {channels} channels (was the model queried with another "
                    "vocabulary? Its 'sem_seg' must have one channel per class of the dataset's "
                    "stuff_classes)"
                )
            return output
        if self._num_queries is not None:
            ok, expected = channels == self._num_queries, str(self._num_queries)
        else:
            ok, expected = channels > self._surplus, f"at least {self._surplus + 1}"
        if not ok:
            raise ValueError(
                f"dataset {self._dataset_name!r} expects one output channel per query class "
                f"({expected}; predictions >= {self._surplus} count as class {self._surplus}), "
                f"but the model's output has {channels} channels"
            )
        pred = scores.argmax(dim=0).clamp_(max=self._surplus)
        one_hot = torch.zeros(
            (self._num_classes, *pred.shape), dtype=torch.uint8, device=pred.device
        )
        one_hot.scatter_(0, pred.unsqueeze(0), 1)
        return {**output, "sem_seg": one_hot}

    def encode_json_sem_seg(self, sem_seg, input_file_name):
        return (
            super().encode_json_sem_seg(sem_seg, input_file_name) if self._save_predictions else []
        )

    def evaluate(self):
        output_dir = self._output_dir
        num_images = (
            sum(comm.all_gather(self._num_images)) if self._distributed else self._num_images
        )
        if not self._save_predictions:
            self._output_dir = None  # detectron2 would write an empty predictions file
        try:
            results = super().evaluate()
        finally:
            self._output_dir = output_dir
        if results is None or not output_dir:
            return results
        os.makedirs(output_dir, exist_ok=True)
        path = os.path.join(output_dir, "sem_seg_metrics.json")
        summary = {"dataset": self._dataset_name, "num_images": num_images, **results["sem_seg"]}
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(summary, f, indent=1)
        os.replace(tmp, path)
        return results
