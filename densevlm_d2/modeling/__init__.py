"""detectron2 modeling components: the CLIP ViT backbone and region pooling."""

from .backbone import CLIPViTBackbone
from .meta_arch import CLIPRegionClassifier
from .region_pooling import BoxPooler, pool_masks

__all__ = ["BoxPooler", "CLIPRegionClassifier", "CLIPViTBackbone", "pool_masks"]
