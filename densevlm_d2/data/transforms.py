"""Photometric training augmentation: the SSD colour distortion, without OpenCV.

CAT-Seg and MaskFormer train semantic segmentation with the colour distortion of SSD
(``INPUT.COLOR_AUG_SSD``): on the uint8 image, each step applied with probability 0.5,

* brightness: add ``uniform(-32, 32)``;
* contrast: multiply by ``uniform(0.5, 1.5)``;
* saturation: multiply the HSV saturation by ``uniform(0.5, 1.5)``;
* hue: add ``randint(-18, 18)`` (inclusive) to the hue, modulo 180;

with contrast either before saturation and hue or after them (probability 0.5). Each step
computes in float, clips to [0, 255] and truncates to uint8, as the published ``convert`` does;
saturation and hue each go to HSV and back on their own.

The published transform draws its random numbers while it is applied, from Python's ``random``;
here :class:`ColorAugSSD` draws them all in ``get_transform`` from numpy's global generator (as
detectron2's augmentations do, so its seeding covers them) and :class:`ColorAugSSDTransform`
applies them deterministically. It changes only the image: coordinates and segmentations pass
through unchanged.

HSV follows OpenCV's uint8 convention (``COLOR_RGB2HSV`` / ``COLOR_HSV2RGB``): H is the hue in
degrees halved, in [0, 180); S and V are in [0, 255]. OpenCV is an optional extra of this project,
so :func:`rgb_to_hsv` and :func:`hsv_to_rgb` implement the conversions in numpy; they agree with
OpenCV to within one level (OpenCV's 8-bit path uses fixed-point tables).
"""

from __future__ import annotations

import numpy as np
from detectron2.data import transforms as T

__all__ = ["ColorAugSSD", "ColorAugSSDTransform", "hsv_to_rgb", "rgb_to_hsv"]


def _round(x: np.ndarray) -> np.ndarray:
    """Round half up (OpenCV's fixed-point rounding in the forward conversion)."""
    return np.floor(x + 0.5)


def rgb_to_hsv(image: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> (..., 3) uint8 HSV in OpenCV's convention (H in [0, 180), degrees / 2;
    S = 255 (max - min) / max; V = max), each rounded to the nearest integer. Grey pixels have H = 0
    and S = 0."""
    _check_uint8_rgb(image)
    rgb = image.astype(np.int32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = rgb.max(axis=-1)
    diff = v - rgb.min(axis=-1)
    s = _round(255.0 * diff / np.maximum(v, 1))
    # hue in units of 60 degrees, times diff: red max -> g - b, green max -> 2 diff + b - r,
    # blue max -> 4 diff + r - g (red wins ties, then green, as in OpenCV)
    num = np.where(v == r, g - b, np.where(v == g, 2 * diff + b - r, 4 * diff + r - g))
    h = _round(30.0 * num / np.maximum(diff, 1))  # 60 degrees = 30 units of H
    h = np.where(h < 0, h + 180, h)
    h = np.where(diff == 0, 0, h)
    return np.stack([h, s, v], axis=-1).astype(np.uint8)


def hsv_to_rgb(image: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 HSV in OpenCV's convention -> (..., 3) uint8 RGB, rounded to the nearest
    integer. H is taken modulo 180."""
    _check_uint8_rgb(image, "HSV")
    hsv = image.astype(np.float64)
    h = np.mod(hsv[..., 0] / 30.0, 6.0)  # in sectors of 60 degrees
    s = hsv[..., 1] / 255.0
    v = hsv[..., 2]
    sector = np.minimum(np.floor(h).astype(np.int64), 5)
    f = h - sector
    p = v * (1.0 - s)  # the minimum channel
    q = v * (1.0 - s * f)  # falling within the sector
    t = v * (1.0 - s * (1.0 - f))  # rising within the sector
    # (r, g, b) per sector: 0 red->yellow, 1 yellow->green, 2 green->cyan, 3 cyan->blue,
    # 4 blue->magenta, 5 magenta->red
    table = np.stack([v, q, p, t], axis=-1)  # indices 0..3
    order = np.array([[0, 3, 2], [1, 0, 2], [2, 0, 3], [2, 1, 0], [3, 2, 0], [0, 2, 1]])
    rgb = np.take_along_axis(table, order[sector], axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _check_uint8_rgb(image: np.ndarray, what: str = "RGB") -> None:
    if image.dtype != np.uint8 or image.ndim < 1 or image.shape[-1] != 3:
        raise ValueError(
            f"expected a (..., 3) uint8 {what} image, got {image.dtype} of shape {image.shape}"
        )


def _convert(x: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """``x * alpha + beta`` in float32, clipped to [0, 255], truncated to uint8 (the published
    ``convert``)."""
    return np.clip(x.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


class ColorAugSSDTransform(T.Transform):
    """The SSD colour distortion with its random draws fixed. ``None`` skips a step.

    Args:
        brightness: added to every channel.
        contrast: every channel is multiplied by it.
        saturation: the HSV saturation is multiplied by it.
        hue: added to the HSV hue (OpenCV units: degrees / 2), modulo 180.
        contrast_first: contrast before saturation and hue (else after them).
        img_format: channel order of the images: ``"RGB"`` or ``"BGR"``.
    """

    def __init__(
        self,
        brightness: float | None = None,
        contrast: float | None = None,
        saturation: float | None = None,
        hue: int | None = None,
        contrast_first: bool = True,
        img_format: str = "RGB",
    ):
        super().__init__()
        if img_format not in ("RGB", "BGR"):
            raise ValueError(f"ColorAugSSD needs an RGB or BGR image format, got {img_format!r}")
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(
                f"ColorAugSSD expects an (H, W, 3) uint8 image, got {img.dtype} {img.shape}"
            )
        rgb = img if self.img_format == "RGB" else img[:, :, ::-1]
        if self.brightness is not None:
            rgb = _convert(rgb, beta=self.brightness)
        if self.contrast_first:
            rgb = self._contrast(rgb)
        if self.saturation is not None:
            hsv = rgb_to_hsv(rgb)
            hsv[:, :, 1] = _convert(hsv[:, :, 1], alpha=self.saturation)
            rgb = hsv_to_rgb(hsv)
        if self.hue is not None:
            hsv = rgb_to_hsv(rgb)
            hsv[:, :, 0] = (hsv[:, :, 0].astype(np.int64) + self.hue) % 180
            rgb = hsv_to_rgb(hsv)
        if not self.contrast_first:
            rgb = self._contrast(rgb)
        out = rgb if self.img_format == "RGB" else rgb[:, :, ::-1]
        return np.ascontiguousarray(out)

    def _contrast(self, rgb: np.ndarray) -> np.ndarray:
        return rgb if self.contrast is None else _convert(rgb, alpha=self.contrast)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation


class ColorAugSSD(T.Augmentation):
    """Draws :class:`ColorAugSSDTransform`: each step with probability ``prob`` (0.5), brightness
    ``uniform(-brightness_delta, brightness_delta)``, contrast and saturation factors uniform in
    their ranges, hue shift ``randint(-hue_delta, hue_delta)`` (inclusive); contrast first with
    probability 0.5. Every call draws the same count of numbers from numpy's global generator."""

    def __init__(
        self,
        img_format: str = "RGB",
        brightness_delta: float = 32,
        contrast_low: float = 0.5,
        contrast_high: float = 1.5,
        saturation_low: float = 0.5,
        saturation_high: float = 1.5,
        hue_delta: int = 18,
        prob: float = 0.5,
    ):
        super().__init__()
        if img_format not in ("RGB", "BGR"):
            raise ValueError(f"ColorAugSSD needs an RGB or BGR image format, got {img_format!r}")
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> ColorAugSSDTransform:
        def maybe(value):
            return value if self._rand_range() < self.prob else None

        brightness = maybe(float(self._rand_range(-self.brightness_delta, self.brightness_delta)))
        contrast_first = bool(self._rand_range() < 0.5)
        contrast = maybe(float(self._rand_range(self.contrast_low, self.contrast_high)))
        saturation = maybe(float(self._rand_range(self.saturation_low, self.saturation_high)))
        hue = maybe(int(np.random.randint(-self.hue_delta, self.hue_delta + 1)))
        return ColorAugSSDTransform(
            brightness=brightness,
            contrast=contrast,
            saturation=saturation,
            hue=hue,
            contrast_first=contrast_first,
            img_format=self.img_format,
        )
