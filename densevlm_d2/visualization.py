"""Dense open-vocabulary prediction of one image (every token classified against a vocabulary) and
its drawing with detectron2's Visualizer (the drawing needs OpenCV: ``pip install
opencv-python-headless``; the prediction does not)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data.catalog import Metadata
from detectron2.utils.colormap import random_color

from .api import CLIPRegionEncoder
from .clip.preprocess import to_pil_rgb

__all__ = ["dense_prediction", "draw_dense_prediction"]


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
    """The image with each predicted class region coloured and named (detectron2's
    ``draw_sem_seg``): HxWx3 RGB. ``colors``: RGB per class (default: fixed random colours)."""
    try:
        from detectron2.utils.visualizer import Visualizer
    except ModuleNotFoundError as e:
        if e.name != "cv2":
            raise
        raise ModuleNotFoundError(
            "drawing predictions uses detectron2's Visualizer, which needs OpenCV: "
            "pip install opencv-python-headless",
            name="cv2",
        ) from e
    if colors is None:
        rng_state = np.random.get_state()
        np.random.seed(0)  # the same colours on every run
        colors = [[int(c) for c in random_color(rgb=True, maximum=255)] for _ in class_names]
        np.random.set_state(rng_state)
    elif len(colors) != len(class_names):
        raise ValueError(f"{len(colors)} colours for {len(class_names)} classes")
    colors = [[int(c) for c in rgb] for rgb in colors]
    meta = Metadata(name="densevlm_demo", stuff_classes=list(class_names), stuff_colors=colors)
    vis = Visualizer(np.asarray(to_pil_rgb(image)), metadata=meta)
    return vis.draw_sem_seg(labels, alpha=alpha).get_image()
