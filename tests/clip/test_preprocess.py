"""Preprocessing: resize of the longest side, padding, normalisation, masks on the token grid,
crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from densevlm_d2.clip.preprocess import (
    CLIP_MEAN,
    CLIP_STD,
    crop_box,
    preprocess_crop,
    preprocess_image,
    preprocess_mask,
    resize_longest,
)


def _image(h, w, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_image_resized_padded_and_normalised():
    img = _image(300, 450)  # landscape: width is the longest side
    x, scale = preprocess_image(img, 512)
    assert x.shape == (3, 512, 512) and scale == pytest.approx(512 / 450)
    new_h = round(300 * 512 / 450)  # 341
    expected = np.asarray(img.resize((512, new_h), Image.BICUBIC), dtype=np.float32) / 255.0
    expected = (
        torch.from_numpy(expected).permute(2, 0, 1) - torch.tensor(CLIP_MEAN)[:, None, None]
    ) / torch.tensor(CLIP_STD)[:, None, None]
    assert torch.allclose(x[:, :new_h], expected, atol=1e-6)
    pad = (-torch.tensor(CLIP_MEAN) / torch.tensor(CLIP_STD))[:, None, None]
    assert torch.allclose(
        x[:, new_h:], pad.expand(3, 512 - new_h, 512)
    )  # black padding, then normalised


def test_portrait_and_array_and_rectangular_canvas():
    arr = np.asarray(_image(400, 100))
    x, scale = preprocess_image(arr, 512)
    assert scale == pytest.approx(512 / 400)
    pad = (-torch.tensor(CLIP_MEAN) / torch.tensor(CLIP_STD))[:, None, None]
    assert torch.allclose(x[:, :, 128:], pad.expand(3, 512, 384))
    x, scale = preprocess_image(arr, (256, 512))
    assert x.shape == (3, 256, 512) and scale == pytest.approx(256 / 400)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        preprocess_image(np.zeros((4, 4), np.uint8), 512)


def test_mask_to_token_grid_without_antialiasing():
    mask = np.zeros((300, 450), dtype=bool)
    mask[100:140, 200:215] = True
    grid = preprocess_mask(mask, 32)
    scale = 32 / 450
    nh, nw = round(300 * scale), round(450 * scale)
    ref = (
        F.interpolate(
            torch.from_numpy(mask).float()[None, None],
            size=(nh, nw),
            mode="bicubic",
            align_corners=False,
            antialias=False,
        )[0, 0]
        > 0
    )
    assert grid.shape == (32, 32) and grid.dtype == torch.bool
    assert torch.equal(grid[:nh, :nw], ref) and not grid[nh:].any()
    assert grid.any()
    antialiased = (
        F.interpolate(
            torch.from_numpy(mask).float()[None, None],
            size=(nh, nw),
            mode="bicubic",
            align_corners=False,
            antialias=True,
        )[0, 0]
        > 0
    )
    assert antialiased.sum() > ref.sum()  # newer torchvision's default would dilate the mask
    with pytest.raises(ValueError, match="2-D"):
        preprocess_mask(np.zeros((1, 4, 4)), 32)


def test_crop_box_enlarge_and_clip():
    assert crop_box((10, 20, 50, 60), (100, 100), enlarge=1.5) == (0.0, 10.0, 60.0, 70.0)
    assert crop_box((10, 20, 50, 60), (40, 100)) == (10.0, 20.0, 40.0, 60.0)


def test_crop_is_centred_and_padded():
    img = _image(100, 200)
    x = preprocess_crop(
        img, (0, 0, 200, 50), size=224
    )  # 200x50 crop -> 224x56, padded 84 above and below
    pad = (-torch.tensor(CLIP_MEAN) / torch.tensor(CLIP_STD))[:, None, None]
    assert torch.allclose(x[:, :84], pad.expand(3, 84, 224))
    assert torch.allclose(x[:, 140:], pad.expand(3, 84, 224))
    assert not torch.allclose(x[:, 84:140], pad.expand(3, 56, 224))
    canvas, scale = resize_longest(img.crop((0, 0, 200, 50)), 224, center=True)
    assert scale == pytest.approx(224 / 200) and canvas.size == (224, 224)
