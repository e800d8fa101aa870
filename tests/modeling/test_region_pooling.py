"""Box and mask pooling against hand-written computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from detectron2.structures import Boxes

from densevlm_d2.modeling.region_pooling import BoxPooler, pool_masks


def _bilinear(fmap, y, x):
    """Bilinear sample of a (C, H, W) map with RoIAlign's border rules."""
    _, h, w = fmap.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return torch.zeros(fmap.shape[0], dtype=torch.float64)
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= h - 1:
        y0 = y1 = h - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= w - 1:
        x0 = x1 = w - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return (
        (1 - ly) * (1 - lx) * fmap[:, y0, x0]
        + (1 - ly) * lx * fmap[:, y0, x1]
        + ly * (1 - lx) * fmap[:, y1, x0]
        + ly * lx * fmap[:, y1, x1]
    )


def roi_align_1x1(fmap, box, stride):
    """1x1 RoIAlign, aligned (half-pixel offset), adaptive sampling: mean of ceil(h) x ceil(w)
    bilinear samples."""
    fmap = fmap.double()
    x0, y0, x1, y1 = (v / stride - 0.5 for v in box)
    bw, bh = x1 - x0, y1 - y0
    gw, gh = max(math.ceil(bw), 1), max(math.ceil(bh), 1)
    acc = torch.zeros(fmap.shape[0], dtype=torch.float64)
    for iy in range(gh):
        for ix in range(gw):
            acc += _bilinear(fmap, y0 + (iy + 0.5) * bh / gh, x0 + (ix + 0.5) * bw / gw)
    return acc / (gh * gw)


def test_boxes_match_hand_written_roi_align():
    g = torch.Generator().manual_seed(0)
    dense = F.normalize(torch.randn(2, 8, 6, 10, generator=g), dim=1)
    boxes = [
        torch.tensor(
            [[0.0, 0.0, 160.0, 96.0], [17.0, 5.0, 60.0, 90.5], [150.0, 80.0, 170.0, 100.0]]
        ),
        torch.tensor([[33.3, 12.0, 47.0, 31.0]]),
    ]
    feats = BoxPooler(stride=16)(dense, boxes)
    assert feats.shape == (4, 8)
    expected = [roi_align_1x1(dense[0], b.tolist(), 16) for b in boxes[0]] + [
        roi_align_1x1(dense[1], boxes[1][0].tolist(), 16)
    ]
    expected = F.normalize(torch.stack(expected).float(), dim=-1)
    assert torch.allclose(feats, expected, atol=1e-5)
    # Boxes objects, stride 14 (ViT-L/14), and an image without boxes
    feats14 = BoxPooler(stride=14)(dense, [Boxes(boxes[0]), torch.zeros(0, 4)])
    assert feats14.shape == (3, 8)
    assert torch.allclose(
        feats14[1],
        F.normalize(roi_align_1x1(dense[0], boxes[0][1].tolist(), 14).float(), dim=0),
        atol=1e-5,
    )


def test_box_batch_mismatch_is_an_error():
    with pytest.raises(ValueError, match="boxes for 1 images but a batch of 2"):
        BoxPooler(16)(torch.zeros(2, 4, 3, 3), [torch.zeros(1, 4)])


def test_masks_mean_of_tokens_inside():
    g = torch.Generator().manual_seed(1)
    dense = F.normalize(torch.randn(2, 5, 4, 6, generator=g), dim=1)
    m0 = torch.zeros(2, 4, 6, dtype=torch.bool)
    m0[0, 1:3, 2:5] = True
    m0[1, 0, 0] = True
    m1 = torch.zeros(1, 4, 6, dtype=torch.bool)  # empty mask: zero vector, as published
    feats = pool_masks(dense, [m0, m1])
    tokens = dense[0][:, 1:3, 2:5].reshape(5, -1).mean(1)
    assert torch.allclose(feats[0], F.normalize(tokens, dim=0), atol=1e-6)
    assert torch.allclose(feats[1], dense[0][:, 0, 0], atol=1e-6)
    assert torch.equal(feats[2], torch.zeros(5))
    with pytest.raises(ValueError, match=r"expected \(N, 4, 6\), the token grid"):
        pool_masks(dense, [torch.zeros(1, 64, 96), m1])
    with pytest.raises(ValueError, match="masks for 1 images"):
        pool_masks(dense, [m0])


def test_half_precision_maps_pool_in_float32():
    """Box coordinates are not rounded to the map's precision (bf16 spacing: 2 px at 300 px)."""
    dense = F.normalize(
        torch.randn(1, 8, 32, 32, generator=torch.Generator().manual_seed(2)), dim=1
    )
    boxes = [torch.tensor([[100.3, 200.7, 301.1, 411.9]])]
    full = BoxPooler(16)(dense, boxes)
    half = BoxPooler(16)(dense.bfloat16(), boxes)
    assert half.dtype == torch.float32
    assert torch.allclose(half, full, atol=1e-2)
    masks = [torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(3)) > 0.5]
    assert torch.allclose(pool_masks(dense.bfloat16(), masks), pool_masks(dense, masks), atol=1e-2)
