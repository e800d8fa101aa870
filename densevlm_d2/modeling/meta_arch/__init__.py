"""Meta-architectures (registered in detectron2's META_ARCH_REGISTRY), each with its data
(:class:`~densevlm_d2.modeling.meta_arch.base.DataContract`)."""

from .base import DataContract, DetectorData, data_contract, set_detector_vocabulary
from .cat_seg import CATSeg
from .dense_seg import CLIPDenseSegmenter
from .region_alignment import CLIPSelf, DenseVLM, RegionAlignmentModel, RegionCLIP
from .region_classifier import CLIPRegionClassifier

__all__ = [
    "CATSeg",
    "CLIPDenseSegmenter",
    "CLIPRegionClassifier",
    "CLIPSelf",
    "DataContract",
    "DenseVLM",
    "DetectorData",
    "RegionAlignmentModel",
    "RegionCLIP",
    "data_contract",
    "set_detector_vocabulary",
]
