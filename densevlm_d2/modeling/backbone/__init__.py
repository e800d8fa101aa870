from .clip_vit import CLIPViTBackbone, get_clip_backbone, parse_out_features
from .fvit import CLIPFPN, CLIPFeaturePyramid, SimplePyramid, build_clip_fpn_backbone

__all__ = [
    "CLIPFPN",
    "CLIPFeaturePyramid",
    "CLIPViTBackbone",
    "SimplePyramid",
    "build_clip_fpn_backbone",
    "get_clip_backbone",
    "parse_out_features",
]
