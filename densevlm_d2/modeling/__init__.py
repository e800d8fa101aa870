"""detectron2 modeling components: the CLIP ViT backbones (dense features; F-ViT pyramid + FPN),
region pooling, the region-alignment meta-architectures and the open-vocabulary ROI heads."""

from .backbone import CLIPViTBackbone
from .meta_arch import CLIPRegionClassifier
from .open_vocab import set_vocabulary
from .region_pooling import BoxPooler, pool_masks
from .roi_heads import OpenVocabROIHeads, TextClassifierOutputLayers, fuse_scores

__all__ = [
    "BoxPooler",
    "CLIPRegionClassifier",
    "CLIPViTBackbone",
    "OpenVocabROIHeads",
    "TextClassifierOutputLayers",
    "fuse_scores",
    "pool_masks",
    "set_vocabulary",
]
