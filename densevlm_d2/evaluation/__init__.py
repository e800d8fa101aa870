"""Evaluators."""

from .ov_coco import OVCOCOEvaluator, ap50_per_class
from .ov_lvis import OVLVISEvaluator, ov_lvis_table
from .region_accuracy import RegionAccuracyEvaluator, region_accuracy
from .sem_seg import SemSegMetricsEvaluator

__all__ = [
    "OVCOCOEvaluator",
    "OVLVISEvaluator",
    "RegionAccuracyEvaluator",
    "SemSegMetricsEvaluator",
    "ap50_per_class",
    "ov_lvis_table",
    "region_accuracy",
]
