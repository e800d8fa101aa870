"""F-ViT's backbone in detectron2: a frozen CLIP ViT, a simple feature pyramid and a stock FPN.

Following the published F-ViT (CLIPSelf repository, ``F-ViT/models/evaclip_vit.py``):

* the frozen CLIP ViT gives the outputs of four blocks (``[3, 5, 7, 11]`` for B/16, ``[6, 10, 14,
  23]`` for L/14), the last one through its value path (:mod:`densevlm_d2.clip.towers`), and the
  dense CLIP map (the same value path, final norm, projection, L2-normalised; a norm and a linear
  layer more) for the ROI heads' text classifier size and test-time score fusion;
* a simple pyramid (:class:`SimplePyramid`, trainable) brings them to strides 4, 8, 16, 32:
  ``deconv 2x2/2 -> norm -> GELU -> deconv 2x2/2``, ``deconv 2x2/2``, identity, ``maxpool 2x2/2``;
* detectron2's :class:`~detectron2.modeling.FPN` (256 channels, ``LastLevelMaxPool`` for ``p6``).

:class:`CLIPFeaturePyramid` (pyramid on the CLIP backbone) is the ``bottom_up`` of a stock FPN;
:class:`CLIPFPN` is that FPN passing the dense CLIP map through as ``"clip_dense"`` (RPN and ROI
heads select their inputs by name and ignore it). The builder ``build_clip_fpn_backbone`` is
registered in detectron2's ``BACKBONE_REGISTRY``, so any detectron2 R-CNN config can use it.

Two detectron2 constraints shape the input (reference F-ViT pads every input to an S x S square):

* ``MODEL.FVIT.PAD_TO``: the normalised image batch is zero padded to this square before the ViT (0
  after normalisation is the mean pixel, as published; the ViT's global attention sees the same
  canvas as published). Detections stay within the real image sizes.
* ``MODEL.FVIT.TOKEN_STRIDE``: detectron2's anchor generator and ``ROIPooler`` need power-of-two
  strides, and an L/14 token covers 14 pixels. The canvas is resized by ``patch / TOKEN_STRIDE``
  (bilinear) before the ViT, so one token covers ``TOKEN_STRIDE`` canvas pixels: the published L/14
  recipe at 896 px (strides 3.5 ... 56, anchors 28 ... 448) is this backbone at a 1024 canvas with
  TOKEN_STRIDE 16 (strides 4 ... 64, anchors 32 ... 512): the same tokens, anchors and RoIs relative
  to the image content, with one extra bilinear resize of the image. For B/16 it is a no-op.

``MODEL.FVIT.GRAD_CHECKPOINTING`` recomputes the pyramid's and the FPN's activations in the backward
pass (and the ROI heads' box and mask heads', :class:`~densevlm_d2.modeling.OpenVocabROIHeads`);
``MODEL.FVIT.FROZEN_PRECISION`` stores the frozen CLIP in half precision
(:class:`~densevlm_d2.modeling.CLIPViTBackbone`'s ``precision``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from torch import nn

from ...clip.precision import parse_precision
from ...utils.activation_checkpointing import checkpointed
from .clip_vit import CLIPViTBackbone

__all__ = ["CLIPFPN", "CLIPFeaturePyramid", "SimplePyramid", "build_clip_fpn_backbone"]

PYRAMID_FEATURES = ("s2", "s3", "s4", "s5")  # strides 4, 8, 16, 32 with TOKEN_STRIDE 16


class SimplePyramid(nn.Module):
    """Four block outputs at stride ``s`` -> maps at strides ``s/4, s/2, s, 2s`` (published
    F-ViT)."""

    def __init__(self, channels: int, norm: str = "SyncBN"):
        super().__init__()
        c = channels
        self.up4 = nn.Sequential(
            nn.ConvTranspose2d(c, c, 2, 2), get_norm(norm, c) or nn.Identity(), nn.GELU(),
            nn.ConvTranspose2d(c, c, 2, 2),
        )  # fmt: skip
        self.up2 = nn.ConvTranspose2d(c, c, 2, 2)
        self.down2 = nn.MaxPool2d(2, 2)

    def forward(self, blocks: list[torch.Tensor]) -> list[torch.Tensor]:
        b0, b1, b2, b3 = blocks
        return [self.up4(b0), self.up2(b1), b2, self.down2(b3)]


class CLIPFeaturePyramid(Backbone):
    """Frozen CLIP ViT + :class:`SimplePyramid`: ``s2 .. s5`` and ``clip_dense``."""

    def __init__(
        self,
        clip_backbone: CLIPViTBackbone,
        blocks: list[int],
        norm: str = "SyncBN",
        pad_to: int = 0,
        token_stride: int = 16,
        grad_checkpointing: bool = False,
    ):
        super().__init__()
        self.grad_checkpointing = grad_checkpointing
        if len(blocks) != 4:
            raise ValueError(f"F-ViT takes four CLIP blocks, got {list(blocks)}")
        if token_stride & (token_stride - 1) or token_stride < 4:
            raise ValueError(f"TOKEN_STRIDE must be a power of two >= 4, got {token_stride}")
        if pad_to % (2 * token_stride):
            raise ValueError(
                f"PAD_TO ({pad_to}) must be a multiple of twice TOKEN_STRIDE ({token_stride})"
            )
        self.clip_backbone = clip_backbone
        self.blocks = list(blocks)
        self.pad_to, self.token_stride = pad_to, token_stride
        self.scale = clip_backbone.patch_size / token_stride
        self.pyramid = SimplePyramid(clip_backbone.tower.width, norm)
        s = token_stride
        self._out_features = [*PYRAMID_FEATURES, "clip_dense"]
        self._out_feature_strides = dict(
            zip(PYRAMID_FEATURES, (s // 4, s // 2, s, 2 * s), strict=True)
        )
        self._out_feature_channels = dict.fromkeys(PYRAMID_FEATURES, clip_backbone.tower.width)
        self._out_feature_strides["clip_dense"] = s
        self._out_feature_channels["clip_dense"] = clip_backbone.embed_dim

    @property
    def size_divisibility(self) -> int:
        return 2 * self.token_stride

    def vit_input(self, x: torch.Tensor) -> torch.Tensor:
        """Pad the normalised batch to the square canvas, then resize it so that one ViT token
        covers ``token_stride`` canvas pixels."""
        h, w = x.shape[-2:]
        if self.pad_to:
            if h > self.pad_to or w > self.pad_to:
                raise ValueError(f"input {h}x{w} is larger than MODEL.FVIT.PAD_TO={self.pad_to}")
            x = F.pad(x, (0, self.pad_to - w, 0, self.pad_to - h))
        if self.scale != 1.0:
            size = [round(v * self.scale) for v in x.shape[-2:]]
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x

    def forward(self, x: torch.Tensor | dict) -> dict[str, torch.Tensor]:
        if isinstance(x, dict):  # already computed (see CLIPFPN.forward)
            return x
        with torch.no_grad():  # the CLIP ViT is frozen (and kept in eval mode by CLIPViTBackbone)
            out = self.clip_backbone.features(self.vit_input(x), dense=True, blocks=self.blocks)
        feats = self.pyramid_maps([out.blocks[i] for i in self.blocks])
        feats["clip_dense"] = out.dense
        return feats

    def pyramid_maps(self, blocks: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """The four block outputs -> ``s2 .. s5`` (checkpointed with ``grad_checkpointing``)."""
        maps = checkpointed(
            self._pyramid, *blocks, module=self.pyramid, enabled=self.grad_checkpointing
        )
        return dict(zip(PYRAMID_FEATURES, maps, strict=True))

    def _pyramid(self, *blocks: torch.Tensor) -> list[torch.Tensor]:
        return self.pyramid(list(blocks))

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            k: ShapeSpec(channels=self._out_feature_channels[k], stride=v)
            for k, v in self._out_feature_strides.items()
        }


class CLIPFPN(FPN):
    """detectron2's FPN over :class:`CLIPFeaturePyramid`, passing ``clip_dense`` through;
    ``grad_checkpointing``: the FPN's own activations are recomputed in the backward pass."""

    def __init__(self, *, grad_checkpointing: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.grad_checkpointing = grad_checkpointing

    def forward(self, x):
        bottom_up = self.bottom_up(x)
        levels = [bottom_up[f] for f in self.in_features]  # as arguments: kept for the backward
        out = checkpointed(self._fpn, *levels, module=self, enabled=self.grad_checkpointing)
        out["clip_dense"] = bottom_up["clip_dense"]
        return out

    def _fpn(self, *levels: torch.Tensor) -> dict[str, torch.Tensor]:
        # the bottom-up module returns a computed dict as is
        return super().forward(dict(zip(self.in_features, levels, strict=True)))

    def output_shape(self):
        return {**super().output_shape(), "clip_dense": self.bottom_up.output_shape()["clip_dense"]}


@BACKBONE_REGISTRY.register()
def build_clip_fpn_backbone(cfg, input_shape=None) -> CLIPFPN:
    """``MODEL.BACKBONE.NAME: build_clip_fpn_backbone``: CLIP ViT (``MODEL.CLIP.*``, frozen;
    ``OUT_FEATURES`` is set here) +
    simple pyramid (``MODEL.FVIT.*``) + FPN (``MODEL.FPN.OUT_CHANNELS``, ``MODEL.FPN.NORM``)."""
    f = cfg.MODEL.FVIT
    args = CLIPViTBackbone.from_config(cfg)
    if args["finetune"] != "frozen":
        raise ValueError(
            "F-ViT's CLIP is frozen: MODEL.CLIP.FINETUNE must be 'frozen', got "
            f"{args['finetune']!r}"
        )
    parse_precision(f.FROZEN_PRECISION, "MODEL.FVIT.FROZEN_PRECISION")
    args.update(
        out_features=["dense"] + [f"block{i}" for i in f.BLOCKS], precision=f.FROZEN_PRECISION
    )
    clip_backbone = CLIPViTBackbone(**args)
    bottom_up = CLIPFeaturePyramid(
        clip_backbone,
        list(f.BLOCKS),
        f.PYRAMID_NORM,
        f.PAD_TO,
        f.TOKEN_STRIDE,
        grad_checkpointing=f.GRAD_CHECKPOINTING,
    )
    in_features = list(cfg.MODEL.FPN.IN_FEATURES)
    if in_features != list(PYRAMID_FEATURES):
        raise ValueError(
            f"MODEL.FPN.IN_FEATURES must be {list(PYRAMID_FEATURES)} for this backbone"
        )
    fpn = CLIPFPN(
        bottom_up=bottom_up,
        in_features=in_features,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
        grad_checkpointing=f.GRAD_CHECKPOINTING,
    )
    assert math.log2(fpn.size_divisibility).is_integer()
    return fpn
