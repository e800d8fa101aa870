"""Evaluators."""

from .ov_coco import OVCOCOEvaluator, ap50_per_class
from .region_accuracy import RegionAccuracyEvaluator, region_accuracy

__all__ = ["OVCOCOEvaluator", "RegionAccuracyEvaluator", "ap50_per_class", "region_accuracy"]
