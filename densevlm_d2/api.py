"""The public Python API: :func:`load_clip` and the :class:`CLIPRegionEncoder` it returns."""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .clip.checkpoint import CheckpointFormat
from .clip.hub import zoo_entry
from .clip.models import available_models
from .clip.preprocess import (
    crop_box,
    preprocess_crop,
    preprocess_image,
    preprocess_masks,
    to_pil_rgb,
)
from .clip.text import DEFAULT_TEXT_SPEC, TextSpec
from .clip.vocabulary import Vocabulary
from .modeling.backbone.clip_vit import CLIPViTBackbone
from .modeling.region_pooling import BoxPooler, pool_masks

__all__ = ["CLIPRegionEncoder", "load_clip"]


class CLIPRegionEncoder(nn.Module):
    """A CLIP model with dense, box, mask, crop, image and text features, all L2-normalised.

    Images go through :meth:`preprocess` (longest side resized to ``image_size``, zero padding
    right/bottom, CLIP normalisation, as published). Box coordinates given to :meth:`encode_boxes`
    are pixels of that preprocessed canvas: multiply original-image boxes by the scale that
    :meth:`preprocess` returns. The CLIP is :attr:`backbone` (a
    :class:`~densevlm_d2.modeling.CLIPViTBackbone`), its open_clip model :attr:`model`.
    """

    def __init__(
        self,
        model: nn.Module | CLIPViTBackbone,
        model_name: str | None = None,
        image_size: int | tuple[int, int] = 512,
        text_cache_dir: str | os.PathLike | None = "default",
    ):
        """``model``: a :class:`~densevlm_d2.modeling.CLIPViTBackbone`, or an open_clip model of
        the architecture ``model_name`` (its parameters are then frozen)."""
        super().__init__()
        if not isinstance(model, CLIPViTBackbone):
            if model_name is None:
                raise ValueError("name the architecture of an open_clip model: model_name=...")
            model = CLIPViTBackbone(
                model_name=model_name, model=model, text_cache_dir=text_cache_dir
            )
        self.backbone = model
        self.image_size = _check_image_size(image_size, model.patch_size)
        self.box_pooler = BoxPooler(model.patch_size)

    # -- properties --------------------------------------------------------------------------------
    @property
    def model(self) -> nn.Module:
        """The open_clip model."""
        return self.backbone.model

    @property
    def model_name(self) -> str:
        return self.backbone.model_name

    @property
    def patch_size(self) -> int:
        return self.backbone.patch_size

    @property
    def embed_dim(self) -> int:
        return self.backbone.embed_dim

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def token_grid(self) -> tuple[int, int]:
        size = (
            (self.image_size, self.image_size)
            if isinstance(self.image_size, int)
            else self.image_size
        )
        return self.backbone.tower.token_grid(*size)

    # -- preprocessing -----------------------------------------------------------------------------
    def preprocess(self, image, return_scale: bool = False):
        """PIL image, HxWx3 uint8 RGB array or path -> (3, H, W) input tensor (and the
        image-to-canvas scale)."""
        x, scale = preprocess_image(image, self.image_size)
        return (x, scale) if return_scale else x

    def preprocess_masks(self, masks) -> torch.Tensor:
        """(N, H, W) binary masks at original image resolution -> (N, h, w) boolean masks on the
        token grid."""
        masks = np.asarray(masks, dtype=bool)
        if masks.size == 0:
            return torch.zeros(0, *self.token_grid, dtype=torch.bool)
        return preprocess_masks(masks, self.token_grid)

    # -- features ----------------------------------------------------------------------------------
    def _batch(self, images: torch.Tensor) -> torch.Tensor:
        images = images[None] if images.ndim == 3 else images
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"expected images of shape (B, 3, H, W) or (3, H, W), got {tuple(images.shape)}"
            )
        return images.to(self.device, dtype=self._dtype)

    @property
    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def encode_dense(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, D, H/p, W/p) per-token L2-normalised dense features."""
        return self.backbone.features(self._batch(images), dense=True).dense

    def encode_boxes(self, images: torch.Tensor, boxes: Sequence) -> torch.Tensor:
        """Per-image (N_i, 4) pixel xyxy boxes on the input canvas -> (sum N_i, D) features, in
        order. A box that is not finite, or that is empty once clipped to the canvas, is a
        ``ValueError`` naming its image and index."""
        return self.encode_regions(images, boxes=boxes)["boxes"]

    def encode_masks(self, images: torch.Tensor, masks: Sequence) -> torch.Tensor:
        """Per-image (N_i, h, w) token-grid masks (see :meth:`preprocess_masks`) -> (sum N_i, D)
        features. A mask that covers no token is a ``ValueError`` naming its image and index."""
        return self.encode_regions(images, masks=masks)["masks"]

    def encode_regions(
        self, images: torch.Tensor, boxes: Sequence | None = None, masks: Sequence | None = None
    ):
        """Boxes and masks of the same images from one dense pass (checked as in
        :meth:`encode_boxes` and :meth:`encode_masks`).

        Returns ``{"boxes": (R, D), "masks": (M, D)}`` for what was given."""
        images = self._batch(images)
        if boxes is not None:
            boxes = check_boxes(boxes, [tuple(images.shape[-2:])] * len(images), "canvas")
        if masks is not None:
            masks = _check_masks(masks, len(images))
        dense = self.encode_dense(images)
        out = {}
        if boxes is not None:
            out["boxes"] = self.box_pooler(dense, boxes)
        if masks is not None:
            out["masks"] = pool_masks(dense, masks)
        return out

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, D) CLS image embeddings (any input size; position embeddings
        resized)."""
        return F.normalize(
            self.backbone.features(self._batch(images), dense=False, image=True).image, dim=-1
        )

    def encode_crops(
        self, image, boxes, enlarge: float = 1.0, crop_size: int = 224, batch_size: int = 64
    ) -> torch.Tensor:
        """CLS embeddings of crops of the *original* image: (N, 4) pixel xyxy boxes -> (N, D).

        Each box is enlarged by ``enlarge`` about its centre (the published evaluation uses 1.5
        for things), clipped to the image, cropped, fitted into ``crop_size`` with centred zero
        padding."""
        pil = to_pil_rgb(image)
        (boxes,) = check_boxes([boxes], [(pil.height, pil.width)], "image")
        crops = [preprocess_crop(pil, crop_box(b, pil.size, enlarge), crop_size) for b in boxes]
        crops = torch.stack(crops) if crops else torch.zeros(0, 3, crop_size, crop_size)
        return self.backbone.encode_crops(crops.to(self.device, self._dtype), batch_size)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Raw strings -> (N, D) text embeddings (no prompt templates)."""
        return self.backbone.encode_text(texts).to(self.device)

    def text_embeddings(
        self, classes: Vocabulary | Sequence[str], spec: TextSpec = DEFAULT_TEXT_SPEC
    ) -> torch.Tensor:
        """A vocabulary (or a list of class names, checked as one) -> (K, D) prompt-ensembled class
        embeddings (default: the published generator's; cached in memory and on disk), on the
        model's device (:meth:`densevlm_d2.modeling.CLIPViTBackbone.text_embeddings`)."""
        return self.backbone.text_embeddings(classes, spec).to(self.device)

    # -- classification ----------------------------------------------------------------------------
    @property
    def logit_scale(self) -> float:
        """The CLIP's learnt temperature (``exp`` of open_clip's ``logit_scale``; 100 for the
        published models): cosines times this are the logits CLIP was trained with."""
        scale = getattr(self.model, "logit_scale", None)
        if scale is None:
            raise AttributeError(f"{self.model_name} has no logit_scale")
        return float(scale.detach().float().exp())

    def classify(
        self, features: torch.Tensor, class_embeddings: torch.Tensor, scale: float | None = None
    ) -> torch.Tensor:
        """(N, D) region/image features and (K, D) class embeddings (both L2-normalised) -> (N, K)
        class probabilities: the softmax of ``scale`` x cosine (default :attr:`logit_scale`). Raw
        cosines lie close together; their softmax without the scale is near uniform."""
        if features.shape[-1] != class_embeddings.shape[-1]:
            raise ValueError(
                f"features of dimension {features.shape[-1]} and class embeddings of "
                f"{class_embeddings.shape[-1]}"
            )
        scale = self.logit_scale if scale is None else scale
        logits = features.float() @ class_embeddings.float().to(features.device).T
        return (scale * logits).softmax(-1)

    # -- weights -----------------------------------------------------------------------------------
    def save(
        self,
        path: str | os.PathLike,
        fmt: CheckpointFormat | str = "eva_clip",
        dtype: torch.dtype | None = None,
    ):
        """Export the weights in the EVA-CLIP release layout (EVA02 only) or open_clip's."""
        return self.backbone.save(path, fmt, dtype)


def check_boxes(boxes: Sequence, sizes: Sequence[tuple[int, int]], what: str) -> list[torch.Tensor]:
    """Per-image xyxy boxes as (N_i, 4) float32 tensors, each finite and with a positive width and
    height once clipped to its ``(height, width)``; otherwise a ``ValueError`` naming the image and
    the box indices."""
    if len(boxes) != len(sizes):
        raise ValueError(f"got boxes for {len(boxes)} images but {len(sizes)} images")
    out = []
    for i, (b, (h, w)) in enumerate(zip(boxes, sizes, strict=True)):
        t = torch.as_tensor(b, dtype=torch.float32)
        if t.numel() % 4 or (t.ndim != 2 and t.numel()):
            raise ValueError(f"boxes of image {i} must be (N, 4) xyxy, got shape {tuple(t.shape)}")
        t = t.reshape(-1, 4)
        finite = torch.isfinite(t).all(1)
        x0, y0 = t[:, 0].clamp(0, w), t[:, 1].clamp(0, h)
        x1, y1 = t[:, 2].clamp(0, w), t[:, 3].clamp(0, h)
        empty = finite & ((x1 <= x0) | (y1 <= y0))
        problems = []
        if not finite.all():
            problems.append(f"not finite at indices {_indices(~finite)}")
        if empty.any():
            problems.append(
                f"empty once clipped to the {w}x{h} {what} (x0 < x1 and y0 < y1 needed) at "
                f"indices {_indices(empty)}"
            )
        if problems:
            raise ValueError(f"boxes of image {i}: " + "; ".join(problems))
        out.append(t)
    return out


def _check_masks(masks: Sequence, num_images: int) -> list[torch.Tensor]:
    if len(masks) != num_images:
        raise ValueError(f"got masks for {len(masks)} images but {num_images} images")
    out = []
    for i, m in enumerate(masks):
        m = torch.as_tensor(m)
        if m.ndim == 3 and len(m):
            empty = ~m.flatten(1).bool().any(1)
            if empty.any():
                raise ValueError(
                    f"masks of image {i} cover no token at indices {_indices(empty)} (masks are "
                    "on the token grid: see preprocess_masks)"
                )
        out.append(m)
    return out


def _indices(flags: torch.Tensor) -> list[int]:
    idx = torch.nonzero(flags).flatten().tolist()
    return idx[:20] + (["..."] if len(idx) > 20 else [])


def _check_image_size(size, patch: int):
    sides = (size, size) if isinstance(size, int | float) else tuple(size)
    if (
        len(sides) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in sides)
        or min(sides) < patch
    ):
        raise ValueError(
            f"image_size must be an int or an (height, width) pair of ints of at least the patch "
            f"size {patch}, got {size!r}"
        )
    return size if isinstance(size, int) else sides


def load_clip(
    model_name: str = "EVA02-CLIP-B-16",
    checkpoint: str | os.PathLike | None = None,
    image_size: int | tuple[int, int] = 512,
    device: str | torch.device = "cpu",
    text_cache_dir: str | os.PathLike | None = "default",
    random_init: bool = False,
) -> CLIPRegionEncoder:
    """Build a CLIP model and strictly load ``checkpoint`` (EVA-CLIP, DenseVLM/CLIPSelf or open_clip
    layout). Its parameters are frozen and it is in eval mode.

    ``checkpoint`` may be a local file, an ``hf://<org>/<repo>/<file>`` reference or a model-zoo
    name; ``model_name`` may itself be a model-zoo name (``load_clip("densevlm-eva02-b16")``), which
    gives the architecture and the weights (:mod:`densevlm_d2.clip.hub`, docs/model_zoo.md).

    A model without weights is built only when asked for: ``random_init=True`` (and no
    checkpoint). ``image_size`` is the preprocessing canvas (512 in the published evaluation); the
    model itself runs at any size.
    """
    entry = zoo_entry(model_name)
    if entry is not None:  # a zoo name: its architecture and its checkpoint
        if checkpoint is not None:
            raise ValueError(f"{model_name!r} is a model-zoo entry: pass no checkpoint with it")
        model_name, checkpoint = entry.model, entry.reference
    if model_name not in available_models():
        close = difflib.get_close_matches(model_name, available_models(), n=2)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise ValueError(
            f"load_clip: unsupported CLIP model {model_name!r}, an unknown model{hint} "
            "(densevlm_d2.available_models() lists the architectures, docs/model_zoo.md the "
            "published weights by name)"
        )
    if checkpoint is None and not random_init:
        raise ValueError(
            f"load_clip({model_name!r}) needs weights: pass checkpoint=<file>, or "
            "random_init=True for a randomly initialised model"
        )
    if checkpoint is not None and random_init:
        raise ValueError("pass either a checkpoint or random_init=True, not both")
    backbone = CLIPViTBackbone(
        model_name=model_name,
        checkpoint=checkpoint or "",
        text_cache_dir=text_cache_dir,
        checkpoint_role="CLIP checkpoint",
        random_init=random_init,
    )
    return CLIPRegionEncoder(backbone.to(device).eval(), image_size=image_size)
