"""detectron2 modeling components: the CLIP ViT backbones (the CLIP's one owner; F-ViT pyramid +
FPN), region pooling, pixel normalisation, the meta-architectures and the open-vocabulary ROI
heads."""

from .backbone import CLIPViTBackbone, get_clip_backbone
from .meta_arch import (
    CATSeg,
    CLIPDenseSegmenter,
    CLIPRegionClassifier,
    DataContract,
    RegionAlignmentModel,
    data_contract,
)
from .pixels import PixelNormalizer
from .region_pooling import BoxPooler, pool_masks
from .roi_heads import OpenVocabROIHeads, TextClassifierOutputLayers, fuse_scores, set_vocabulary

__all__ = [
    "BoxPooler",
    "CATSeg",
    "CLIPDenseSegmenter",
    "CLIPRegionClassifier",
    "CLIPViTBackbone",
    "DataContract",
    "OpenVocabROIHeads",
    "PixelNormalizer",
    "RegionAlignmentModel",
    "TextClassifierOutputLayers",
    "data_contract",
    "fuse_scores",
    "get_clip_backbone",
    "pool_masks",
    "set_vocabulary",
]
