"""Meta-architectures (registered in detectron2's META_ARCH_REGISTRY)."""

from .cat_seg import CATSeg
from .dense_segmenter import CLIPDenseSegmenter
from .region_alignment import CLIPSelf, DenseVLM, RegionAlignmentModel, RegionCLIP
from .region_classifier import CLIPRegionClassifier

__all__ = [
    "CATSeg",
    "CLIPDenseSegmenter",
    "CLIPRegionClassifier",
    "CLIPSelf",
    "DenseVLM",
    "RegionAlignmentModel",
    "RegionCLIP",
]
