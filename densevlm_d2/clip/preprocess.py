"""Preprocessing exactly as the published DenseVLM/CLIPSelf evaluation does it.

See docs/published_code.md, "Region-classification evaluation".

* Images: PIL bicubic resize so the image fits the canvas (longest side to 512 for a square canvas),
  new size ``round(side * scale)``, zero (black) padding on the right and bottom, then ToTensor and
  Normalize with the OpenAI CLIP mean/std, so the padding is ``(0 - mean) / std`` after
  normalisation.
* Masks: the float mask is resized like the image but to the token grid (bicubic on the tensor,
  *without* antialiasing as torchvision 0.15 did; newer torchvision antialiases by default, which
  dilates small masks after the threshold), zero padded, then thresholded at ``> 0``.
* Crops: the region crop is resized so its longest side is 224 (bicubic) and zero padded centred.

Canvas sizes may be an int (square, as published) or ``(height, width)``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "crop_box",
    "load_rgb",
    "normalize",
    "preprocess_crop",
    "preprocess_image",
    "preprocess_mask",
    "preprocess_masks",
    "resize_longest",
    "to_pil_rgb",
]

CLIP_MEAN = tuple(OPENAI_DATASET_MEAN)
CLIP_STD = tuple(OPENAI_DATASET_STD)


def _canvas(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def fit_scale(image_hw: tuple[int, int], size: int | tuple[int, int]) -> float:
    """Scale that fits an image of ``(h, w)`` into the canvas (``512 / max(h, w)`` for a square
    canvas)."""
    ch, cw = _canvas(size)
    h, w = image_hw
    return min(ch / float(h), cw / float(w))


def to_pil_rgb(image) -> Image.Image:
    """A PIL RGB image from a PIL image, an HWC uint8 RGB array or a file path."""
    if isinstance(image, Image.Image):
        return image.convert("RGB") if image.mode != "RGB" else image
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 uint8 RGB array, got {image.dtype} {image.shape}")
        return Image.fromarray(image)
    return load_rgb(image)


def load_rgb(path, context: str = "") -> Image.Image:
    """Decode an image file as RGB; a file that cannot be decoded (missing, truncated, not an image)
    is an ``OSError`` naming it (and ``context``, e.g. the dataset and image id)."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        where = f" ({context})" if context else ""
        raise OSError(f"cannot decode the image {path}{where}: {e}") from None


def resize_longest(
    image: Image.Image, size: int | tuple[int, int], center: bool = False
) -> tuple[Image.Image, float]:
    """Bicubic resize to fit the canvas, zero padding right/bottom (or centred). Returns (canvas,
    scale)."""
    ch, cw = _canvas(size)
    w, h = image.size
    scale = fit_scale((h, w), (ch, cw))
    # at least one pixel: a very elongated image keeps a 1-px short side
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = image.resize((nw, nh), Image.BICUBIC)
    canvas = Image.new(image.mode, (cw, ch), 0)
    offset = ((cw - nw) // 2, (ch - nh) // 2) if center else (0, 0)
    canvas.paste(resized, offset)
    return canvas, scale


def normalize(image: Image.Image) -> torch.Tensor:
    """ToTensor + Normalize with the OpenAI CLIP mean/std: (3, H, W) float32."""
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    return (x - mean) / std


def preprocess_image(image, size: int | tuple[int, int] = 512) -> tuple[torch.Tensor, float]:
    """Image (PIL, HWC uint8 RGB array or path) -> ((3, H, W) normalised canvas, scale from image to
    canvas)."""
    canvas, scale = resize_longest(to_pil_rgb(image), size)
    return normalize(canvas), scale


def preprocess_mask(mask, grid: int | tuple[int, int]) -> torch.Tensor:
    """Binary (H, W) mask at image resolution -> boolean mask on the token grid, as the published
    evaluation does."""
    m = torch.as_tensor(np.asarray(mask))
    if m.ndim != 2:
        raise ValueError(f"expected a 2-D (H, W) mask, got shape {tuple(m.shape)}")
    return preprocess_masks(m[None], grid)[0]


def preprocess_masks(masks, grid: int | tuple[int, int], chunk: int = 16) -> torch.Tensor:
    """(N, H, W) binary masks -> (N, h, w) boolean masks on the token grid, resized in chunks."""
    m = torch.as_tensor(np.asarray(masks))
    if m.ndim != 3:
        raise ValueError(f"expected (N, H, W) masks, got shape {tuple(m.shape)}")
    gh, gw = _canvas(grid)
    n, h, w = m.shape
    scale = fit_scale((h, w), (gh, gw))
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    out = torch.zeros(n, gh, gw, dtype=torch.bool)
    for i in range(0, n, chunk):
        resized = F.interpolate(
            m[i : i + chunk, None].float(),
            size=(nh, nw),
            mode="bicubic",
            align_corners=False,
            antialias=False,
        )
        out[i : i + chunk, :nh, :nw] = resized[:, 0] > 0
    return out


def crop_box(
    box, image_wh: tuple[int, int], enlarge: float = 1.0
) -> tuple[float, float, float, float]:
    """``box`` (x0, y0, x1, y1) enlarged about its centre by ``enlarge`` and clipped to the image
    (the published evaluation crops things at 1.5x, stuff tightly)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if enlarge != 1.0:
        cx, cy, hw, hh = (
            (x0 + x1) / 2,
            (y0 + y1) / 2,
            (x1 - x0) * enlarge / 2,
            (y1 - y0) * enlarge / 2,
        )
        x0, y0, x1, y1 = cx - hw, cy - hh, cx + hw, cy + hh
    w, h = image_wh
    return max(x0, 0.0), max(y0, 0.0), min(x1, float(w)), min(y1, float(h))


def preprocess_crop(image: Image.Image, box, size: int = 224) -> torch.Tensor:
    """Crop ``box`` (pixel xyxy) from ``image``, fit into ``size`` x ``size`` centred, normalise:
    (3, size, size)."""
    canvas, _ = resize_longest(image.crop(tuple(box)), size, center=True)
    return normalize(canvas)
