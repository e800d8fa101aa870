"""detectron2 modeling components: the CLIP ViT backbone and region pooling."""

from .backbone import CLIPViTBackbone
from .region_pooling import BoxPooler, pool_masks

__all__ = ["BoxPooler", "CLIPViTBackbone", "pool_masks"]
