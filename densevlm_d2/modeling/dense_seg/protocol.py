"""Training-free dense segmentation with a CLIP: the steps of the protocol, as plain functions.

The protocol is SCLIP's (Wang et al., ECCV 2024), which ClearCLIP, NACLIP and ProxyCLIP share:

1. :func:`resize_short_side`: bilinear resize so the short side is ``short_side`` (long side at
   most ``max_long_side``), the resized pixels rounded to 0..255 as an 8-bit resize gives them;
2. :func:`sliding_window_logits`: windows of ``window`` pixels every ``stride`` pixels (the last
   window of a row or column is shifted back inside the image; an image smaller than a window is
   one window of its own size); per window, the cosine of each dense token with each text query,
   upsampled bilinearly to the window; overlapping windows averaged; the result upsampled
   bilinearly to the original image;
3. :func:`class_probabilities`: logits x ``logit_scale``, softmax over the queries, then per class
   the largest probability among its queries (a class may have several synonyms);
4. :func:`decide`: optionally, a foreground class covering at most ``area_threshold`` of the
   foreground pixels is suppressed, and a pixel whose best probability is below
   ``prob_threshold`` becomes background; then the argmax.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "class_probabilities",
    "decide",
    "resize_short_side",
    "resized_size",
    "sliding_window_logits",
    "window_boxes",
]


def resized_size(height: int, width: int, short_side: int, max_long_side: int) -> tuple[int, int]:
    """(h, w) after scaling by ``min(short_side / short, max_long_side / long)``, rounded half up
    (mmcv's ``imrescale`` and detectron2's ``ResizeShortestEdge`` agree on this)."""
    if short_side <= 0:
        return height, width
    scale = min(short_side / min(height, width), max_long_side / max(height, width))
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_short_side(
    image: torch.Tensor,
    short_side: int,
    max_long_side: int = 2048,
    *,
    round_pixels: bool = True,
    antialias: bool = False,
) -> torch.Tensor:
    """(3, H, W) image (0..255, any dtype) -> (3, h, w) float32, see :func:`resized_size`.
    Bilinear with half-pixel centres; without antialiasing as OpenCV's resize, which the published
    protocol uses."""
    h, w = resized_size(image.shape[-2], image.shape[-1], short_side, max_long_side)
    x = image.float()
    if (h, w) == tuple(image.shape[-2:]):
        return x
    x = F.interpolate(x[None], (h, w), mode="bilinear", align_corners=False, antialias=antialias)
    return x[0].round().clamp(0, 255) if round_pixels else x[0]


def window_boxes(height: int, width: int, window: int, stride: int) -> list[tuple[int, ...]]:
    """``(y1, y2, x1, x2)`` of the sliding windows, row by row. Every window is
    ``min(window, height) x min(window, width)``; together they cover the image."""
    if window <= 0 or stride <= 0:
        raise ValueError(f"window and stride must be positive, got {window} and {stride}")
    rows = max(height - window + stride - 1, 0) // stride + 1
    cols = max(width - window + stride - 1, 0) // stride + 1
    boxes = []
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * stride + window, height), min(c * stride + window, width)
            boxes.append((max(y2 - window, 0), y2, max(x2 - window, 0), x2))
    return boxes


def _token_logits(
    dense_fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, text: torch.Tensor
) -> torch.Tensor:
    """(B, 3, h, w) -> (B, Q, h, w): cosine of each dense token with each query, upsampled."""
    dense = F.normalize(dense_fn(images).float(), dim=1)  # (B, D, h/p, w/p)
    logits = torch.einsum("bdhw,qd->bqhw", dense, text)
    return F.interpolate(logits, images.shape[-2:], mode="bilinear", align_corners=False)


def sliding_window_logits(
    dense_fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    text: torch.Tensor,
    output_size: tuple[int, int],
    window: int = 224,
    stride: int = 112,
    batch_size: int = 16,
) -> torch.Tensor:
    """(3, h, w) normalised image -> (Q, H, W) float32 cosine logits at ``output_size``.

    ``dense_fn`` maps (B, 3, h', w') images to (B, D, h'/p, w'/p) dense features; ``text`` holds
    (Q, D) unit-norm query embeddings. ``window <= 0``: the whole image in one pass. The windows of
    an image all have one size and go through ``dense_fn`` ``batch_size`` at a time."""
    text = F.normalize(text.float(), dim=-1)
    if window <= 0:
        logits = _token_logits(dense_fn, image[None], text)
    else:
        h, w = image.shape[-2:]
        boxes = window_boxes(h, w, window, stride)
        logits = image.new_zeros((1, len(text), h, w), dtype=torch.float32)
        count = image.new_zeros((1, 1, h, w), dtype=torch.float32)
        for i in range(0, len(boxes), batch_size):
            chunk = boxes[i : i + batch_size]
            crops = torch.stack([image[:, y1:y2, x1:x2] for y1, y2, x1, x2 in chunk])
            for (y1, y2, x1, x2), one in zip(
                chunk, _token_logits(dense_fn, crops, text), strict=True
            ):
                logits[0, :, y1:y2, x1:x2] += one
                count[0, :, y1:y2, x1:x2] += 1
        logits /= count
    return F.interpolate(logits, output_size, mode="bilinear", align_corners=False)[0]


def class_probabilities(
    logits: torch.Tensor, logit_scale: float, query_class: torch.Tensor | None = None
) -> torch.Tensor:
    """(Q, H, W) logits -> (K, H, W): softmax over the queries of ``logit_scale * logits``; a class
    with several queries (``query_class``: (Q,) class of each query) takes their largest
    probability."""
    probs = (logits * logit_scale).softmax(0)
    if query_class is None or len(query_class) == int(query_class.max()) + 1:
        return probs
    num_classes = int(query_class.max()) + 1
    out = probs.new_zeros((num_classes, *probs.shape[1:]))
    index = query_class.to(probs.device).view(-1, *([1] * (probs.ndim - 1))).expand_as(probs)
    return out.scatter_reduce_(0, index, probs, "amax", include_self=False)


def decide(
    probs: torch.Tensor,
    background: int | None = None,
    prob_threshold: float = 0.0,
    area_threshold: float = 0.0,
) -> torch.Tensor:
    """(K, H, W) class probabilities -> scores whose argmax over classes is the prediction.

    With a ``background`` class: foreground classes whose argmax area is at most
    ``area_threshold`` x the foreground area are zeroed (when ``area_threshold > 0``); then pixels
    whose best score is below ``prob_threshold`` get a background score of 1, above any other."""
    if prob_threshold <= 0 and area_threshold <= 0:
        return probs
    if background is None:
        raise ValueError("probability and area thresholds need a background class")
    probs = probs.clone()
    if area_threshold > 0:
        counts = torch.bincount(probs.argmax(0).flatten(), minlength=len(probs)).to(probs.dtype)
        foreground = torch.ones(len(probs), dtype=torch.bool, device=probs.device)
        foreground[background] = False
        small = foreground & (counts <= area_threshold * counts[foreground].sum())
        probs[small] = 0
    if prob_threshold > 0:
        low = probs.max(0).values < prob_threshold
        probs[background][low] = 1.0
    return probs
