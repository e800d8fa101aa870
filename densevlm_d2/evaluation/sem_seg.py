"""Semantic-segmentation metrics: detectron2's ``SemSegEvaluator``, with readable class names,
checked label files and a JSON summary.

Metrics are detectron2's (mIoU, fwIoU, mACC, pACC, per-class IoU and accuracy, in %). A class that
is neither in the ground truth nor predicted does not count in mIoU; one that is predicted but
absent from the ground truth counts with IoU 0 (the convention of mmsegmentation's IoUMetric
too). Written to the output folder: ``sem_seg_metrics.json`` (the results, the dataset and the
number of images) and, with ``save_predictions``, detectron2's ``sem_seg_predictions.json`` (RLE
per class and image) and ``sem_seg_evaluation.pth``.

Each label file is read with :func:`~densevlm_d2.data.datasets.sem_seg.read_sem_seg_label`: a
file that is not one class index per pixel, whose size is not the prediction's (the image's), or
that holds values that are neither a class of the dataset's vocabulary nor its ignore label is an
error naming the file and the dataset (detectron2 would score such values, or fail with a
broadcasting error that names nothing).

A dataset whose model is queried with more names than are scored (its vocabulary's
``query_names``; VOC-20b: 59 queries, 21 classes) has its predictions, the argmax over all of the
output's channels, mapped to ``min(prediction, s)`` (``s``: the vocabulary's ``surplus_index``)
before they are scored, as CAT-Seg's ``VOCbEvaluator`` does. Any other output must have one
channel per scored class: detectron2 would silently drop or misplace the predictions of extra
channels, so a mismatch is a ValueError.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from detectron2.evaluation import SemSegEvaluator
from detectron2.utils import comm

from ..data.datasets.sem_seg import read_sem_seg_label
from ..data.vocabulary import dataset_vocabulary
from ..utils.files import atomic_write

__all__ = ["SemSegMetricsEvaluator"]


class SemSegMetricsEvaluator(SemSegEvaluator):
    """``SemSegEvaluator`` whose per-class keys use each class's display name (the vocabulary's
    first synonym; "background" for its background class), which checks every label file, writes
    ``sem_seg_metrics.json`` and scores surplus query classes as the dataset's vocabulary says (see
    the module docstring)."""

    def __init__(
        self,
        dataset_name: str,
        output_dir: str | None = None,
        *,
        distributed: bool = True,
        save_predictions: bool = False,
    ):
        super().__init__(dataset_name, distributed=distributed, output_dir=output_dir)
        vocabulary = dataset_vocabulary(dataset_name)
        if len(vocabulary) != self._num_classes:
            raise ValueError(
                f"dataset {dataset_name!r}: its vocabulary has {len(vocabulary)} classes but its "
                f"stuff_classes {self._num_classes}"
            )
        names = list(vocabulary.display_names)
        # a display name used twice keeps its full string, so that no class's key is lost
        self._class_names = [
            n if names.count(n) == 1 else full
            for n, full in zip(names, vocabulary.names, strict=True)
        ]
        self._save_predictions = save_predictions
        self._num_images = 0
        self._surplus = vocabulary.surplus_index
        self._num_queries = len(vocabulary.query_names) if vocabulary.query_names else None
        # detectron2 main's boundary IoU (needs OpenCV) is not among the reported metrics
        self._compute_boundary_iou = False

    def reset(self):
        super().reset()
        self._num_images = 0

    def process(self, inputs, outputs):
        """detectron2's confusion-matrix update, with every label file checked (module
        docstring)."""
        k = self._num_classes
        for inp, out in zip(inputs, outputs, strict=True):
            pred = self._scored_output(out)["sem_seg"].argmax(dim=0).to(self._cpu_device)
            pred = pred.numpy().astype(np.int64)
            gt = read_sem_seg_label(
                self.input_file_to_gt_file[inp["file_name"]],
                k,
                self._ignore_label,
                size=pred.shape,
                where=f"dataset {self._dataset_name}, image {inp['file_name']}",
            )
            gt[gt == self._ignore_label] = k
            self._conf_matrix += np.bincount(
                (k + 1) * pred.reshape(-1) + gt.reshape(-1), minlength=self._conf_matrix.size
            ).reshape(self._conf_matrix.shape)
            self._predictions.extend(self.encode_json_sem_seg(pred, inp["file_name"]))
        self._num_images += len(inputs)

    def _scored_output(self, output: dict) -> dict:
        """``output`` as detectron2 scores it: one channel per scored class, whose argmax is the
        prediction. With surplus query classes, the argmax over all channels mapped to
        ``min(argmax, surplus_index)``, one-hot (uint8)."""
        scores = output["sem_seg"]
        channels = scores.shape[0]
        if self._surplus is None:
            if channels != self._num_classes:
                raise ValueError(
                    f"dataset {self._dataset_name!r} scores {self._num_classes} classes, but the "
                    f"model's output has {channels} channels (was the model queried with another "
                    "vocabulary? Its 'sem_seg' must have one channel per class of the dataset's "
                    "vocabulary)"
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
        with atomic_write(path, binary=False) as f:
            json.dump(summary, f, indent=1)
        return results
