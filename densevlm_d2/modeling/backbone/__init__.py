from .clip_vit import CLIPViTBackbone, parse_out_features

__all__ = ["CLIPViTBackbone", "parse_out_features"]
