"""Meta-architectures (registered in detectron2's META_ARCH_REGISTRY)."""

from .region_classifier import CLIPRegionClassifier, dataset_vocabulary

__all__ = ["CLIPRegionClassifier", "dataset_vocabulary"]
