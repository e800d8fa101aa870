"""CAT-Seg's cost aggregation head (Cho et al., CVPR 2024) on this project's CLIP backbone; the
meta-architecture is :class:`densevlm_d2.modeling.meta_arch.CATSeg`."""

from .aggregator import AggregatorLayer, CostAggregator, UpBlock
from .class_attention import ATTENTION_TYPES, ClassAggregation, GuidedAttention
from .spatial import GuidedWindowAttention, SpatialAggregation, SwinGuidedBlock

__all__ = [
    "ATTENTION_TYPES",
    "AggregatorLayer",
    "ClassAggregation",
    "CostAggregator",
    "GuidedAttention",
    "GuidedWindowAttention",
    "SpatialAggregation",
    "SwinGuidedBlock",
    "UpBlock",
]
