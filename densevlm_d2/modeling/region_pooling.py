"""Region features from a dense CLIP map: boxes by 1x1 RoIAlign, masks by mean pooling
(docs/published_code.md, "Dense features").

Boxes use detectron2's ``ROIAlign`` layer (``aligned=True``, adaptive sampling) on boxes converted
with ``convert_boxes_to_pooler_format``, which is what ``ROIPooler`` does for a single level.
``ROIPooler`` itself is not used because it only accepts power-of-two strides and ViT-L/14 maps have
stride 14. In pixel coordinates this equals the published ``roi_align(map, boxes / canvas *
map_size, (1, 1), 1.0, -1, True)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from detectron2.layers import ROIAlign
from detectron2.modeling.poolers import convert_boxes_to_pooler_format
from detectron2.structures import Boxes
from torch import nn

__all__ = ["BoxPooler", "pool_masks"]


class BoxPooler(nn.Module):
    """(B, D, H, W) dense map + per-image pixel xyxy boxes -> (R, D) L2-normalised float32 box
    features."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride
        self.align = ROIAlign(
            output_size=(1, 1), spatial_scale=1.0 / stride, sampling_ratio=0, aligned=True
        )

    def forward(self, dense: torch.Tensor, boxes: Sequence[Boxes | torch.Tensor]) -> torch.Tensor:
        if len(boxes) != dense.shape[0]:
            raise ValueError(
                f"got boxes for {len(boxes)} images but a batch of {dense.shape[0]} feature maps"
            )
        # float32 throughout: pixel coordinates in half precision would be off by pixels
        box_lists = [
            Boxes((b.tensor if isinstance(b, Boxes) else torch.as_tensor(b)).float().reshape(-1, 4))
            for b in boxes
        ]
        rois = convert_boxes_to_pooler_format([b.to(dense.device) for b in box_lists])
        feats = self.align(dense.float(), rois).flatten(1)
        return F.normalize(feats, dim=-1)


def pool_masks(
    dense: torch.Tensor, masks: Sequence[torch.Tensor], eps: float = 1e-12
) -> torch.Tensor:
    """(B, D, H, W) dense map + per-image (N_i, H, W) binary masks on the token grid -> (sum N_i, D)
    features.

    Each feature is the mean of the tokens inside its mask, ``sum(f * m) / (sum(m) + eps)``, then
    L2-normalised. A mask with no token inside gives a zero vector, as in the published code.
    """
    if len(masks) != dense.shape[0]:
        raise ValueError(
            f"got masks for {len(masks)} images but a batch of {dense.shape[0]} feature maps"
        )
    grid = tuple(dense.shape[-2:])
    out = []
    for i, m in enumerate(masks):
        m = torch.as_tensor(m, device=dense.device)
        if m.ndim != 3 or tuple(m.shape[-2:]) != grid:
            raise ValueError(
                f"masks of image {i} have shape {tuple(m.shape)}; expected (N, {grid[0]}, "
                f"{grid[1]}), the token grid (preprocess_mask brings image-resolution masks to it)"
            )
        m = m.float().flatten(1)
        feats = m @ dense[i].float().flatten(1).T / (m.sum(1, keepdim=True) + eps)
        out.append(feats)
    return F.normalize(torch.cat(out), dim=-1)
