"""Evaluators."""

from .region_accuracy import RegionAccuracyEvaluator, region_accuracy

__all__ = ["RegionAccuracyEvaluator", "region_accuracy"]
