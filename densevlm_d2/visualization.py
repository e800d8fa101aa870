"""Drawing open-vocabulary predictions: the app's pictures, ``tools/predict.py``'s and the demo's.

Everything is drawn with Pillow and numpy (no OpenCV, no fonts fetched: Pillow's built-in font):

* :func:`palette`: distinct colours for any number of classes (22 colours of maximum contrast
  first, then golden-angle hues);
* :func:`overlay_labels`: a label map blended over the photo, each region outlined;
* :func:`draw_segmentation`: the overlay with a legend (each class's colour, name and share of
  pixels, largest first) and a title (e.g. the model; a randomly initialised model is marked);
* :func:`draw_score_map`: one class's scores as a heat map over the photo, with a colour bar;
* :func:`draw_region_query`: a queried region outlined, with its top classes and probabilities;
* :func:`side_by_side`: pictures next to each other at one height.

:func:`dense_prediction` is the plain dense argmax of a :class:`~densevlm_d2.CLIPRegionEncoder`
(every token against text embeddings; the demo's before/after figure); the training-free protocol
with its sliding windows is :class:`~densevlm_d2.predictor.OpenVocabPredictor`.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from .api import CLIPRegionEncoder
from .clip.preprocess import to_pil_rgb

__all__ = [
    "RANDOM_WEIGHTS_NOTE",
    "dense_prediction",
    "draw_dense_prediction",
    "draw_region_query",
    "draw_score_map",
    "draw_segmentation",
    "overlay_labels",
    "palette",
    "side_by_side",
]

#: the title mark of a picture drawn by a model without trained weights
RANDOM_WEIGHTS_NOTE = "RANDOM WEIGHTS: not a prediction"

# Kenneth Kelly's 22 colours of maximum contrast (1965) without white and black, ordered so that
# each is the farthest (in RGB) from those before it: the first 12 are at least 62 apart.
_KELLY = (
    (243, 195, 0), (0, 103, 165), (190, 0, 50), (161, 202, 241), (43, 61, 38), (135, 86, 146),
    (249, 150, 121), (141, 182, 0), (226, 88, 34), (0, 136, 86), (136, 45, 23), (194, 178, 128),
    (179, 68, 108), (243, 132, 0), (230, 143, 172), (132, 132, 130), (101, 69, 34),
    (96, 78, 151), (246, 166, 0), (220, 211, 0),
)  # fmt: skip


def palette(n: int) -> list[tuple[int, int, int]]:
    """``n`` RGB colours, all different: Kelly's contrast colours, then golden-angle hues at
    alternating lightness."""
    if n < 0:
        raise ValueError(f"a palette of {n} colours")
    colours = list(_KELLY[:n])
    i = 0
    while len(colours) < n:
        hue = (i * 0.618033988749895) % 1.0
        light, sat = (0.45, 0.75) if i % 2 else (0.62, 0.65)
        rgb = tuple(round(255 * c) for c in colorsys.hls_to_rgb(hue, light, sat))
        if rgb not in colours:
            colours.append(rgb)
        i += 1
    return colours


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _labels_array(labels, shape: tuple[int, int]) -> np.ndarray:
    labels = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if labels.shape != shape:
        raise ValueError(f"labels of shape {labels.shape} for an image of {shape[1]}x{shape[0]}")
    return labels.astype(np.int64)


def _borders(labels: np.ndarray) -> np.ndarray:
    """Pixels whose left or upper neighbour has another label (or mask value)."""
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    return edge


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    return np.clip(pixels + 0.5, 0, 255).astype(np.uint8)


def _enlarged(pixels: np.ndarray, min_height: int) -> Image.Image:
    """A picture at least ``min_height`` tall (nearest-neighbour enlargement of small images)."""
    picture = Image.fromarray(pixels)
    if picture.height < min_height:
        scale = min_height / picture.height
        picture = picture.resize((round(picture.width * scale), min_height), Image.NEAREST)
    return picture


def _beside(left: Image.Image, right: Image.Image) -> Image.Image:
    out = Image.new("RGB", (left.width + right.width, max(left.height, right.height)), "white")
    out.paste(left, (0, 0))
    out.paste(right, (left.width, 0))
    return out


def overlay_labels(
    image, labels, colors: Sequence[Sequence[int]], alpha: float = 0.5, outline: bool = True
) -> np.ndarray:
    """HxWx3 uint8: each pixel of the photo blended with its class colour (``alpha``: the colour's
    weight); with ``outline``, region borders are drawn in the darkened class colour. Labels outside
    ``0..len(colors)-1`` (void) are left as the photo."""
    pil = to_pil_rgb(image)
    photo = np.asarray(pil, dtype=np.float32)
    labels = _labels_array(labels, photo.shape[:2])
    table = np.asarray(colors, dtype=np.float32).reshape(-1, 3)
    valid = (labels >= 0) & (labels < len(table))
    colour = table[np.where(valid, labels, 0)]
    out = np.where(valid[..., None], (1 - alpha) * photo + alpha * colour, photo)
    if outline:
        edge = _borders(labels) & valid
        out[edge] = 0.5 * colour[edge]
    return _to_uint8(out)


def _title_bar(width: int, title: str, warn: bool, size: int) -> Image.Image:
    font = _font(size)
    bar = Image.new("RGB", (width, size + 10), (190, 0, 50) if warn else (40, 40, 40))
    ImageDraw.Draw(bar).text((6, 4), title, fill="white", font=font)
    return bar


def _stack(top: Image.Image, bottom: Image.Image) -> Image.Image:
    out = Image.new("RGB", (max(top.width, bottom.width), top.height + bottom.height), "white")
    out.paste(top, (0, 0))
    out.paste(bottom, (0, top.height))
    return out


def draw_segmentation(
    image,
    labels,
    class_names: Sequence[str],
    colors: Sequence[Sequence[int]] | None = None,
    alpha: float = 0.5,
    title: str | None = None,
    random_weights: bool = False,
    min_height: int = 256,
) -> np.ndarray:
    """The overlay (:func:`overlay_labels`) with a legend on the right: each class present, its
    colour, name and share of pixels, largest first (absent classes listed after, greyed). A title
    bar on top when ``title`` is given; ``random_weights`` marks the picture as the output of a
    randomly initialised model. Small images are enlarged (nearest) to ``min_height``."""
    pil = to_pil_rgb(image)
    labels = _labels_array(labels, (pil.height, pil.width))
    colors = palette(len(class_names)) if colors is None else colors
    if len(colors) != len(class_names):
        raise ValueError(f"{len(colors)} colours for {len(class_names)} classes")
    over = _enlarged(overlay_labels(pil, labels, colors, alpha), min_height)
    counts = np.bincount(labels[(labels >= 0) & (labels < len(class_names))].ravel(),
                         minlength=len(class_names))  # fmt: skip
    shares = counts / max(1, labels.size)
    order = sorted(range(len(class_names)), key=lambda i: (-counts[i], i))
    size = 14
    font = _font(size)
    row = size + 8
    width = 12 + size + 8 + max(font.getlength(f"{n[:28]}  100.0%") for n in class_names) + 10
    legend = Image.new("RGB", (int(width), max(over.height, row * len(order) + 12)), "white")
    draw = ImageDraw.Draw(legend)
    for r, i in enumerate(order):
        y = 6 + r * row
        present = counts[i] > 0
        draw.rectangle([10, y, 10 + size, y + size], fill=tuple(int(c) for c in colors[i]),
                       outline="black")  # fmt: skip
        text = f"{class_names[i][:28]}  {100 * shares[i]:.1f}%"
        draw.text((10 + size + 8, y), text, fill="black" if present else (150, 150, 150), font=font)
    body = _beside(over, legend)
    if title is not None or random_weights:
        text = " | ".join(t for t in (title, RANDOM_WEIGHTS_NOTE if random_weights else None) if t)
        body = _stack(_title_bar(body.width, text, random_weights, 15), body)
    return np.asarray(body)


def _colormap(values: np.ndarray) -> np.ndarray:
    import matplotlib

    return (matplotlib.colormaps["inferno"](values)[..., :3] * 255).astype(np.float32)


def draw_score_map(
    image,
    scores,
    class_name: str,
    alpha: float = 0.6,
    title: str | None = None,
    min_height: int = 256,
) -> np.ndarray:
    """One class's (H, W) scores in [0, 1] as a heat map over the photo, a colour bar 0..1 on the
    right, and a title (``class_name`` and ``title``)."""
    pil = to_pil_rgb(image)
    scores = scores.cpu().float().numpy() if isinstance(scores, torch.Tensor) else scores
    scores = np.clip(np.nan_to_num(np.asarray(scores, dtype=np.float32)), 0, 1)
    if scores.shape != (pil.height, pil.width):
        raise ValueError(f"scores of shape {scores.shape} for an image of {pil.width}x{pil.height}")
    photo = np.asarray(pil, dtype=np.float32)
    heat = (1 - alpha) * photo + alpha * _colormap(scores)
    over = _enlarged(_to_uint8(heat), min_height)
    bar_w, font = 56, _font(12)
    ramp = np.linspace(1, 0, over.height - 20, dtype=np.float32)[:, None].repeat(14, 1)
    bar = Image.new("RGB", (bar_w, over.height), "white")
    bar.paste(Image.fromarray(_colormap(ramp).astype(np.uint8)), (6, 10))
    draw = ImageDraw.Draw(bar)
    draw.text((24, 4), "1.0", fill="black", font=font)
    draw.text((24, over.height - 18), "0.0", fill="black", font=font)
    body = _beside(over, bar)
    text = f"score of '{class_name}'" + (f" | {title}" if title else "")
    return np.asarray(_stack(_title_bar(body.width, text, False, 15), body))


def draw_region_query(
    image,
    mask,
    top: Sequence[tuple[str, float]],
    title: str | None = None,
    min_height: int = 256,
) -> np.ndarray:
    """The queried region (an (H, W) boolean mask) highlighted on the photo (the rest dimmed, its
    border drawn) and, on the right, its top classes with probability bars."""
    pil = to_pil_rgb(image)
    photo = np.asarray(pil, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != photo.shape[:2]:
        raise ValueError(f"a mask of shape {mask.shape} for an image of {pil.width}x{pil.height}")
    out = np.where(mask[..., None], photo, 0.35 * photo)
    out[_borders(mask)] = (255, 220, 0)
    over = _enlarged(_to_uint8(out), min_height)
    font, size = _font(14), 14
    panel = Image.new("RGB", (260, max(over.height, 12 + 2 * (size + 8) * len(top))), "white")
    draw = ImageDraw.Draw(panel)
    for r, (name, p) in enumerate(top):
        y = 8 + r * 2 * (size + 6)
        draw.text((10, y), f"{r + 1}. {name[:26]}  {100 * p:.1f}%", fill="black", font=font)
        draw.rectangle([10, y + size + 3, 10 + round(230 * p), y + size + 9], fill=(0, 103, 165))
    body = _beside(over, panel)
    if title:
        body = _stack(_title_bar(body.width, title, False, 15), body)
    return np.asarray(body)


def side_by_side(pictures: Sequence[np.ndarray], gap: int = 12) -> np.ndarray:
    """HxWx3 pictures next to each other (top-aligned, white between)."""
    if not pictures:
        raise ValueError("side_by_side needs at least one picture")
    height = max(p.shape[0] for p in pictures)
    width = sum(p.shape[1] for p in pictures) + gap * (len(pictures) - 1)
    out = np.full((height, width, 3), 255, dtype=np.uint8)
    x = 0
    for p in pictures:
        out[: p.shape[0], x : x + p.shape[1]] = p
        x += p.shape[1] + gap
    return out


@torch.no_grad()
def dense_prediction(
    encoder: CLIPRegionEncoder, image, class_embeddings: torch.Tensor
) -> torch.Tensor:
    """(H, W) class indices at the image's own resolution.

    Token logits (cosine similarity with each class embedding) are upsampled bilinearly to the
    preprocessing canvas, the padding is cut away, the rest is resized to the original image size,
    then the argmax is taken.
    """
    pil = to_pil_rgb(image)
    x, scale = encoder.preprocess(pil, return_scale=True)
    dense = encoder.encode_dense(x)[0]  # (D, h, w)
    logits = torch.einsum("dhw,kd->khw", dense, class_embeddings.to(dense))
    canvas_h, canvas_w = x.shape[-2:]
    logits = F.interpolate(
        logits[None], size=(canvas_h, canvas_w), mode="bilinear", align_corners=False
    )
    w, h = pil.size
    logits = logits[:, :, : round(h * scale), : round(w * scale)]
    logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    return logits[0].argmax(0).cpu()


def draw_dense_prediction(
    image,
    labels: torch.Tensor,
    class_names: Sequence[str],
    alpha: float = 0.6,
    colors: Sequence[Sequence[int]] | None = None,
) -> np.ndarray:
    """The image (its own size) with each predicted class region coloured and outlined: HxWx3 RGB
    (:func:`overlay_labels`; ``colors``: RGB per class, default :func:`palette`). With a legend:
    :func:`draw_segmentation`."""
    colors = palette(len(class_names)) if colors is None else colors
    if len(colors) != len(class_names):
        raise ValueError(f"{len(colors)} colours for {len(class_names)} classes")
    return overlay_labels(image, labels, colors, alpha)
