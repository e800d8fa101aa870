"""Open-vocabulary region classification with a CLIP backbone: the evaluation meta-architecture.

Inputs come from :class:`~densevlm_d2.data.mappers.RegionEvalMapper` (uint8 canvases of one size,
regions per image). Several images run in one forward. For every region type asked for (``rois``,
``maskpool``, ``crops``) the output holds the cosine similarities of the region features with the
class embeddings of the input's dataset vocabulary, which the region-accuracy evaluator scores.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from torch import nn

from ...clip.text import DEFAULT_TEXT_SPEC, TextSpec
from ...data.build import build_region_test_loader
from ...data.vocabulary import dataset_vocabulary
from ..backbone.clip_vit import CLIPViTBackbone
from ..open_vocab import text_spec
from ..pixels import PixelNormalizer
from ..region_pooling import BoxPooler, pool_masks
from .base import DataContract

__all__ = ["CLIPRegionClassifier"]


@META_ARCH_REGISTRY.register()
class CLIPRegionClassifier(DataContract, nn.Module):
    """Classifies given regions (boxes, masks, crops) against a dataset's class names with the
    backbone's CLIP: a :class:`~densevlm_d2.modeling.CLIPViTBackbone`, or any backbone with a
    ``"dense"`` output and CLIPViTBackbone's ``patch_size``, ``text_embeddings`` and (for crops)
    ``encode_crops``. ``text``: how class names become embeddings (``TEST.REGIONS.TEXT``)."""

    @configurable
    def __init__(
        self,
        *,
        backbone: CLIPViTBackbone,
        pixel_mean: tuple[float, ...],
        pixel_std: tuple[float, ...],
        region_types=("rois", "maskpool"),
        text: TextSpec = DEFAULT_TEXT_SPEC,
        crop_batch_size: int = 64,
    ):
        super().__init__()
        if "dense" not in backbone.output_shape():
            raise ValueError(
                f"{type(self).__name__} needs the backbone's 'dense' output "
                "(MODEL.CLIP.OUT_FEATURES)"
            )
        self.backbone = backbone
        self.region_types = tuple(region_types)
        self.text = text
        self.crop_batch_size = crop_batch_size
        self.box_pooler = BoxPooler(backbone.patch_size)
        self.pixels = PixelNormalizer(pixel_mean, pixel_std)

    @classmethod
    def from_config(cls, cfg):
        return {
            "backbone": build_backbone(cfg),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "region_types": list(cfg.TEST.REGIONS.TYPES),
            "text": text_spec(cfg.TEST.REGIONS, "TEST.REGIONS"),
        }

    # -- data --------------------------------------------------------------------------------------
    @classmethod
    def build_test_loader(cls, cfg, dataset_name: str):
        """Panoptic datasets through :class:`~densevlm_d2.data.mappers.RegionEvalMapper`,
        batched."""
        evaluator = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
        if evaluator != "region_accuracy":
            raise ValueError(
                f"{cls.__name__} classifies the segments of panoptic datasets; {dataset_name!r} is "
                f"not one (evaluator_type {evaluator!r})"
            )
        return build_region_test_loader(cfg, dataset_name)

    @property
    def device(self) -> torch.device:
        return self.pixels.device

    def class_embeddings(self, dataset_name: str) -> torch.Tensor:
        """(K, D) unit-norm class embeddings of a dataset's vocabulary on the model's device
        (the backbone's text route: its precomputed file for the dataset, or its text tower)."""
        emb = self.backbone.text_embeddings(dataset_vocabulary(dataset_name), self.text)
        return F.normalize(emb.float(), dim=-1).to(self.device)

    def preprocess_image(self, batched_inputs) -> torch.Tensor:
        images = [x["image"] for x in batched_inputs]
        sizes = {tuple(im.shape) for im in images}
        if len(sizes) != 1:
            raise ValueError(f"all canvases of a batch must have one size, got {sorted(sizes)}")
        return self.pixels(torch.stack(images).to(self.device, non_blocking=True))

    def region_features(self, batched_inputs) -> list[dict[str, torch.Tensor]]:
        """Per image ``{region type: (N_i, D) L2-normalised features}``."""
        regions = [x["regions"] for x in batched_inputs]
        need_dense = any(t in self.region_types for t in ("rois", "maskpool"))
        dense = (
            self.backbone(self.preprocess_image(batched_inputs))["dense"] if need_dense else None
        )
        counts = [len(r["classes"]) for r in regions]
        feats: dict[str, torch.Tensor] = {}
        if "rois" in self.region_types:
            feats["rois"] = self.box_pooler(dense, [r["boxes"] for r in regions])
        if "maskpool" in self.region_types:
            feats["maskpool"] = pool_masks(dense, [r["masks"].to(self.device) for r in regions])
        if "crops" in self.region_types:
            feats["crops"] = self.backbone.encode_crops(
                torch.cat([r["crops"] for r in regions]), self.crop_batch_size
            )
        split = {k: v.split(counts) for k, v in feats.items()}
        return [{k: split[k][i] for k in split} for i in range(len(regions))]

    def forward(self, batched_inputs):
        if self.training:
            raise NotImplementedError(
                "CLIPRegionClassifier only evaluates; train with the DenseVLM, CLIPSelf or "
                "RegionCLIP meta-architecture"
            )
        results = []
        for inp, feats in zip(batched_inputs, self.region_features(batched_inputs), strict=True):
            emb = self.class_embeddings(inp["dataset_name"])
            results.append({"region_scores": {k: f.float() @ emb.T for k, f in feats.items()}})
        return results
