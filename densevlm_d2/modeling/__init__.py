"""detectron2 modeling components: the CLIP ViT backbones (the CLIP's one owner; F-ViT pyramid +
FPN), region pooling, the region-alignment meta-architectures and the open-vocabulary ROI heads."""

from .backbone import CLIPViTBackbone, get_clip_backbone
from .meta_arch import CATSeg, CLIPRegionClassifier, RegionAlignmentModel
from .open_vocab import set_vocabulary
from .region_pooling import BoxPooler, pool_masks
from .roi_heads import OpenVocabROIHeads, TextClassifierOutputLayers, fuse_scores

__all__ = [
    "BoxPooler",
    "CATSeg",
    "CLIPRegionClassifier",
    "CLIPViTBackbone",
    "OpenVocabROIHeads",
    "RegionAlignmentModel",
    "TextClassifierOutputLayers",
    "fuse_scores",
    "get_clip_backbone",
    "pool_masks",
    "set_vocabulary",
]
