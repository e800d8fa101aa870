from .clip_vit import CLIPViTBackbone, parse_out_features
