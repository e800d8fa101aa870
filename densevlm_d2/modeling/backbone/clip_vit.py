"""A CLIP ViT (EVA02-CLIP or OpenAI-style, through upstream open_clip) as a detectron2 backbone."""

from __future__ import annotations

import contextlib
import logging

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from ...clip.checkpoint import load_checkpoint
from ...clip.models import build_clip_model, open_clip_name
from ...clip.towers import vision_tower

__all__ = ["CLIPViTBackbone", "parse_out_features"]

logger = logging.getLogger(__name__)


def parse_out_features(names, num_blocks: int) -> tuple[bool, list[int]]:
    """``["dense", "block3", ...]`` -> (dense wanted, sorted block indices); a clear error for
    anything else."""
    dense, blocks = False, []
    for name in names:
        if name == "dense":
            dense = True
        elif name.startswith("block") and name[5:].isdigit() and int(name[5:]) < num_blocks:
            blocks.append(int(name[5:]))
        else:
            raise ValueError(
                f"unknown CLIP backbone output {name!r}: use 'dense' or 'block<i>' with "
                f"0 <= i < {num_blocks}"
            )
    if not dense and not blocks:
        raise ValueError("the CLIP backbone needs at least one output feature")
    return dense, sorted(set(blocks))


@BACKBONE_REGISTRY.register()
class CLIPViTBackbone(Backbone):
    """Dense CLIP features and intermediate block outputs, all at stride = patch size.

    The whole open_clip model (vision and text towers) is held as ``self.clip`` so that checkpoints
    round-trip strictly and the text tower can build classifiers; only the vision tower runs in
    :meth:`forward`.

    Outputs (``out_features``): ``"dense"`` -> (B, D, H/p, W/p) L2-normalised projected tokens, the
    last block through its value path, as the published ``encode_dense``; ``"block<i>"`` -> (B, C,
    H/p, W/p) tokens after block ``i`` (the last block through its value path, as F-ViT takes it).
    """

    @configurable
    def __init__(
        self,
        *,
        model_name: str,
        checkpoint: str = "",
        out_features: list[str] = ("dense",),
        frozen: bool = True,
        trainable_blocks: int = 0,
        grad_checkpointing: bool = False,
    ):
        super().__init__()
        self.model_name = open_clip_name(model_name)
        self.clip = build_clip_model(model_name)
        if checkpoint:
            fmt = load_checkpoint(self.clip, checkpoint)
            logger.info(
                "CLIP backbone %s: loaded %s (%s layout)", model_name, checkpoint, fmt.value
            )
        self.tower = vision_tower(self.clip.visual)
        self.tower.grad_checkpointing = grad_checkpointing
        self._dense, self._blocks = parse_out_features(out_features, self.tower.num_blocks)
        self._out_features = list(out_features)
        p = self.tower.patch_size
        self._out_feature_strides = {name: p for name in self._out_features}
        self._out_feature_channels = {
            name: self.tower.output_dim if name == "dense" else self.tower.width
            for name in self._out_features
        }
        self.set_trainable(0 if frozen else trainable_blocks)

    @classmethod
    def from_config(cls, cfg, input_shape=None):
        c = cfg.MODEL.CLIP
        return {
            "model_name": c.MODEL_NAME,
            "checkpoint": c.CHECKPOINT,
            "out_features": list(c.OUT_FEATURES),
            "frozen": c.FROZEN,
            "trainable_blocks": c.TRAINABLE_BLOCKS,
            "grad_checkpointing": c.GRAD_CHECKPOINTING,
        }

    def set_trainable(self, num_blocks: int) -> None:
        """Freeze everything except the last ``num_blocks`` vision blocks (published
        ``lock_image_tower``)."""
        n = self.tower.num_blocks
        if not 0 <= num_blocks <= n:
            raise ValueError(f"trainable_blocks must be in [0, {n}], got {num_blocks}")
        for p in self.clip.parameters():
            p.requires_grad_(False)
        for block in self.vision_blocks[n - num_blocks :] if num_blocks else []:
            for p in block.parameters():
                p.requires_grad_(True)
        self.num_trainable_blocks = num_blocks

    @property
    def vision_blocks(self) -> torch.nn.ModuleList:
        module = self.tower.module
        return module.blocks if hasattr(module, "blocks") else module.transformer.resblocks

    @property
    def patch_size(self) -> int:
        return self.tower.patch_size

    @property
    def size_divisibility(self) -> int:
        return self.tower.patch_size

    def train(self, mode: bool = True):
        super().train(mode)
        # Frozen parts stay in eval mode (no dropout or drop path): all of CLIP when frozen, else
        # the text tower.
        if self.num_trainable_blocks == 0:
            self.clip.eval()
        else:
            text = getattr(self.clip, "text", None) or getattr(self.clip, "transformer", None)
            text.eval()
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        frozen = self.num_trainable_blocks == 0
        with torch.no_grad() if frozen else contextlib.nullcontext():
            out = self.tower.forward(x, dense=self._dense, block_indices=self._blocks)
        feats = {f"block{i}": t for i, t in out.blocks.items()}
        if self._dense:
            feats["dense"] = out.dense
        return {name: feats[name] for name in self._out_features}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }
