"""Semantic-segmentation metrics: detectron2's ``SemSegEvaluator``, with readable class names and
a JSON summary.

Metrics are detectron2's (mIoU, fwIoU, mACC, pACC, per-class IoU and accuracy, in %). A class that
is neither in the ground truth nor predicted does not count in mIoU; one that is predicted but
absent from the ground truth counts with IoU 0 (the convention of mmsegmentation's IoUMetric
too). Written to the output folder: ``sem_seg_metrics.json`` (the results, the dataset and the
number of images) and, with ``save_predictions``, detectron2's ``sem_seg_predictions.json`` (RLE
per class and image) and ``sem_seg_evaluation.pth``.
"""

from __future__ import annotations

import json
import os

from detectron2.data import MetadataCatalog
from detectron2.evaluation import SemSegEvaluator
from detectron2.utils import comm

__all__ = ["SemSegMetricsEvaluator"]


class SemSegMetricsEvaluator(SemSegEvaluator):
    """``SemSegEvaluator`` whose per-class keys use each class's display name (metadata
    ``display_classes``, else the first of its ``", "``-separated synonyms) and which writes
    ``sem_seg_metrics.json``."""

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

    def reset(self):
        super().reset()
        self._num_images = 0

    def process(self, inputs, outputs):
        super().process(inputs, outputs)
        self._num_images += len(inputs)

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
