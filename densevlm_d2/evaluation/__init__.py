"""Evaluators."""

from .ov_coco import OVCOCOEvaluator, ap50_per_class
from .region_accuracy import RegionAccuracyEvaluator, region_accuracy
from .sem_seg import SemSegMetricsEvaluator

__all__ = [
    "OVCOCOEvaluator",
    "RegionAccuracyEvaluator",
    "SemSegMetricsEvaluator",
    "ap50_per_class",
    "region_accuracy",
]
