"""Open-vocabulary prediction of one image: what the app shows, for a notebook or a script.

An :class:`OpenVocabPredictor` wraps a built segmenter (the training-free
:class:`~densevlm_d2.modeling.CLIPDenseSegmenter` or :class:`~densevlm_d2.modeling.CATSeg`) and
answers, for any image and any vocabulary:

* :meth:`~OpenVocabPredictor.segment`: every pixel's class scores (a :class:`Segmentation`: the
  label map, each class's share of pixels, the share of pixels called a thing vs stuff);
* :meth:`~OpenVocabPredictor.query_box`, :meth:`~OpenVocabPredictor.query_point`,
  :meth:`~OpenVocabPredictor.query_mask`: the class probabilities of one region (a
  :class:`RegionQuery`), pooled from the CLIP's dense map (ROIAlign for a box, mask pooling for a
  mask; a point asks about the predicted segment under it);
* :func:`compare`: several models on the same image and vocabulary.

Every step records how long it took (``seconds``). Vocabularies are lists of names,
:class:`~densevlm_d2.clip.Vocabulary` values or text (:meth:`Vocabulary.from_text`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch
from torch import nn

from .api import CLIPRegionEncoder, check_boxes
from .clip.preprocess import to_pil_rgb
from .clip.text import DEFAULT_TEXT_SPEC, TextSpec
from .clip.vocabulary import Vocabulary, VocabularyError
from .modeling.backbone.clip_vit import CLIPViTBackbone
from .modeling.dense_seg import class_probabilities
from .modeling.region_pooling import pool_masks

__all__ = [
    "OpenVocabPredictor",
    "RegionQuery",
    "Segmentation",
    "as_vocabulary",
    "compare",
    "image_tensor",
    "known_kinds",
]


def image_tensor(image) -> torch.Tensor:
    """A PIL image, an HxWx3 uint8 RGB array or a file path -> (3, H, W) float32 RGB, 0-255."""
    pil = to_pil_rgb(image)
    return torch.from_numpy(np.array(pil, dtype=np.uint8)).permute(2, 0, 1).float()


@functools.lru_cache(maxsize=1)
def known_kinds() -> tuple[Vocabulary, ...]:
    """Vocabularies whose thing/stuff flags typed names take (the published 316 classes)."""
    from .data.vocabulary import shipped_vocabulary

    return (shipped_vocabulary("coco_stuff_ade20k_316"),)


def as_vocabulary(classes) -> Vocabulary:
    """A list of names, a :class:`Vocabulary` or typed text (:meth:`Vocabulary.from_text`, thing
    and stuff known from the published 316-class vocabulary)."""
    if isinstance(classes, str):
        return Vocabulary.from_text(classes, known=known_kinds())
    return Vocabulary.from_names(classes)


@dataclass(frozen=True, eq=False)  # tensors: compared by identity
class Segmentation:
    """One model's dense prediction of one image.

    ``scores``: (K, H, W) float32 class scores at the image's resolution (the segmenter's output:
    probabilities for the training-free protocol, sigmoid scores for CAT-Seg); their argmax over
    classes is :attr:`labels`. ``seconds``: ``text`` (the vocabulary's embeddings; about 0 once
    cached), ``image`` (the dense pass) and ``total``."""

    vocabulary: Vocabulary
    scores: torch.Tensor
    model: str = ""
    seconds: dict[str, float] = field(default_factory=dict)

    @cached_property
    def labels(self) -> torch.Tensor:
        """(H, W) int64 predicted class per pixel."""
        return self.scores.argmax(0)

    def shares(self) -> torch.Tensor:
        """(K,) share of the image's pixels predicted as each class (sums to 1)."""
        counts = torch.bincount(self.labels.flatten(), minlength=len(self.vocabulary))
        return counts.double() / self.labels.numel()

    def kind_shares(self) -> dict[str, float] | None:
        """``{"thing": share, "stuff": share}`` of the pixels (the foreground bias in one line), or
        None when the vocabulary does not say which classes are things."""
        if self.vocabulary.is_thing is None:
            return None
        things = torch.tensor(self.vocabulary.is_thing, dtype=torch.bool)
        shares = self.shares()
        thing = float(shares[things].sum())
        return {"thing": thing, "stuff": float(shares[~things].sum())}

    def class_index(self, cls: int | str) -> int:
        """A class given by index, name or any of its synonyms -> its index."""
        if isinstance(cls, int) and not isinstance(cls, bool):
            if not 0 <= cls < len(self.vocabulary):
                raise IndexError(f"class {cls} is not in 0..{len(self.vocabulary) - 1}")
            return cls
        for i in range(len(self.vocabulary)):
            if cls in self.vocabulary.synonyms(i) or cls == self.vocabulary.names[i]:
                return i
        raise KeyError(
            f"{cls!r} is not a class of this vocabulary: {self.vocabulary.display_names}"
        )

    def score_map(self, cls: int | str) -> torch.Tensor:
        """(H, W) scores of one class."""
        return self.scores[self.class_index(cls)]


@dataclass(frozen=True, eq=False)
class RegionQuery:
    """The class probabilities of one region (softmax over the vocabulary).

    ``mask``: (H, W) bool, the region at the image's resolution (a box's rectangle, or the segment
    under a point); ``box``: its xyxy pixel box."""

    vocabulary: Vocabulary
    probabilities: torch.Tensor
    mask: np.ndarray
    box: tuple[float, float, float, float]
    model: str = ""
    seconds: dict[str, float] = field(default_factory=dict)

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` most probable classes: (display name, probability), best first."""
        k = min(k, len(self.probabilities))
        values, index = self.probabilities.topk(k)
        names = self.vocabulary.display_names
        return [(names[i], float(v)) for v, i in zip(values, index.tolist(), strict=True)]


class OpenVocabPredictor:
    """One segmenter and its CLIP, asked about one image at a time (see the module docstring).

    ``model``: a built segmenter with a ``backbone`` (:class:`CLIPViTBackbone`) and a
    ``segment(image, classes, output_size=...)`` method, in eval mode. ``region_size``: the
    canvas (longest side, pixels) region queries see the image at; default the segmenter's
    short side (training-free) or its CLIP resolution (CAT-Seg). Region queries use the
    segmenter's text queries and logit scale when it has them (the training-free protocol), else
    the region evaluation's prompts and the CLIP's own logit scale."""

    def __init__(self, model: nn.Module, name: str = "", region_size: int | None = None):
        backbone = getattr(model, "backbone", None)
        if not isinstance(backbone, CLIPViTBackbone) or not callable(
            getattr(model, "segment", None)
        ):
            raise TypeError(
                f"{type(model).__name__} is not a segmenter with a CLIP backbone (expected "
                "CLIPDenseSegmenter or CATSeg)"
            )
        self.model = model.eval()
        self.name = name or type(model).__name__
        self.text: TextSpec = getattr(model, "text", None) or DEFAULT_TEXT_SPEC
        if not self.text.ensemble:  # CAT-Seg keeps one embedding per template: queries ensemble
            self.text = dataclasses.replace(self.text, ensemble=True)
        self._own_text = (self.text, getattr(model, "text", None))
        self._dense_cache: tuple | None = None
        self.logit_scale = float(
            getattr(model, "logit_scale", None) or backbone.model.logit_scale.exp()
        )
        size = region_size or getattr(model, "short_side", None) or model.clip_resolution
        patch = backbone.patch_size
        self.encoder = CLIPRegionEncoder(backbone, image_size=max(patch, size // patch * patch))

    @classmethod
    def from_config(
        cls,
        config_file: str | os.PathLike,
        checkpoint: str | os.PathLike | None = None,
        weights: str | os.PathLike | None = None,
        opts: Sequence[str] = (),
        device: str = "cpu",
        name: str = "",
        region_size: int | None = None,
    ) -> OpenVocabPredictor:
        """Build the segmenter of a config file (``configs/sem_seg/...``, ``configs/cat_seg/...``):
        ``checkpoint`` is the CLIP's weights (``MODEL.CLIP.CHECKPOINT``: a file, ``hf://`` reference
        or model-zoo name), ``weights`` a detectron2 checkpoint of the whole model
        (``MODEL.WEIGHTS``, e.g. a trained CAT-Seg); ``opts`` more config overrides."""
        from detectron2.checkpoint import DetectionCheckpointer
        from detectron2.config import get_cfg
        from detectron2.modeling import build_model

        from .config import add_densevlm_config

        if not os.path.isfile(config_file):
            raise FileNotFoundError(f"config file not found: {config_file}")
        cfg = get_cfg()
        add_densevlm_config(cfg)
        cfg.merge_from_file(str(config_file))
        extra = ["MODEL.DEVICE", device]
        if checkpoint:
            extra += ["MODEL.CLIP.CHECKPOINT", str(checkpoint)]
        cfg.merge_from_list([*extra, *opts])
        if not cfg.MODEL.CLIP.CHECKPOINT and not weights and not cfg.MODEL.CLIP.RANDOM_INIT:
            raise ValueError(
                f"{config_file}: no weights: pass checkpoint=<CLIP file or zoo name> or "
                "weights=<detectron2 checkpoint>"
            )
        cfg.freeze()
        model = build_model(cfg)
        if weights:
            DetectionCheckpointer(model).load(str(weights))
        return cls(model, name=name, region_size=region_size)

    def set_prompts(self, prompts: str | Sequence[str] | None) -> None:
        """Ask with another prompt set (a :data:`~densevlm_d2.clip.prompts.PROMPT_SETS` name or
        templates; None: the model's own): region queries, and the training-free segmenter's
        queries. CAT-Seg keeps the templates it was trained with for its cost volume."""
        own_text, own_model_text = self._own_text
        self.text = own_text if prompts is None else dataclasses.replace(own_text, prompts=prompts)
        if own_model_text is not None and own_model_text.ensemble:
            self.model.text = (
                own_model_text
                if prompts is None
                else dataclasses.replace(own_model_text, prompts=prompts)
            )

    @property
    def backbone(self) -> CLIPViTBackbone:
        return self.model.backbone

    @property
    def device(self) -> torch.device:
        return self.encoder.device

    # -- segmentation ------------------------------------------------------------------------------
    def warm_text(self, vocabulary) -> tuple[Vocabulary, float]:
        """The vocabulary, checked, and the seconds the segmenter's text embeddings took (cached
        afterwards; region queries embed with their own spec when they first need it)."""
        vocabulary = as_vocabulary(vocabulary)
        t0 = time.perf_counter()
        if hasattr(self.model, "text_queries"):  # the training-free segmenter
            self.model.text_queries(vocabulary.queries)
        elif hasattr(self.model, "text_embeddings"):  # CAT-Seg
            self.model.text_embeddings(vocabulary.queries)
        return vocabulary, time.perf_counter() - t0

    @torch.no_grad()
    def segment(self, image, vocabulary) -> Segmentation:
        """Every pixel of ``image`` (PIL, HxWx3 uint8 RGB array or path) scored against
        ``vocabulary`` (its background class, if any, as the segmenter uses it)."""
        t0 = time.perf_counter()
        vocabulary, text_s = self.warm_text(vocabulary)
        x = image_tensor(image)
        t1 = time.perf_counter()
        scores = self.model.segment(x, vocabulary.queries, output_size=tuple(x.shape[-2:]))
        scores = _score_classes(scores.float().cpu(), vocabulary)
        t2 = time.perf_counter()
        seconds = {"text": text_s, "image": t2 - t1, "total": t2 - t0}
        return Segmentation(vocabulary, scores, self.name, seconds)

    # -- region queries ----------------------------------------------------------------------------
    def _dense(self, pil) -> tuple[torch.Tensor, float]:
        """The dense map of the region canvas, and the image-to-canvas scale; the last image's is
        kept, so that further queries on one image only pool (keyed by the pixels and weights)."""
        weights = tuple((p.data_ptr(), p._version) for p in self.backbone.model.visual.parameters())
        key = (hashlib.blake2b(pil.tobytes(), digest_size=16).digest(), pil.size, weights)
        if self._dense_cache is not None and self._dense_cache[0] == key:
            return self._dense_cache[1]
        x, scale = self.encoder.preprocess(pil, return_scale=True)
        value = (self.encoder.encode_dense(x), scale)
        self._dense_cache = (key, value)
        return value

    def _region_text(self, vocabulary: Vocabulary) -> tuple[torch.Tensor, torch.Tensor | None]:
        emb, owner = self.backbone.text_queries(vocabulary, self.text)
        emb = torch.nn.functional.normalize(emb.float(), dim=-1).to(self.device)
        return emb, owner

    def _classify(self, feature: torch.Tensor, vocabulary: Vocabulary) -> torch.Tensor:
        text, owner = self._region_text(vocabulary)
        logits = text @ feature.float().reshape(-1, 1).to(text.device)  # (Q, 1)
        return class_probabilities(logits, self.logit_scale, owner)[:, 0].cpu()

    @torch.no_grad()
    def query_box(self, image, box: Sequence[float], vocabulary) -> RegionQuery:
        """The classes of the box ``(x0, y0, x1, y1)`` (pixels of the image): ROIAlign of the
        dense map over the box, as the region evaluation pools boxes."""
        t0 = time.perf_counter()
        vocabulary = as_vocabulary(vocabulary)
        pil = to_pil_rgb(image)
        (b,) = check_boxes([[list(box)]], [(pil.height, pil.width)], "image")
        x0, y0, x1, y1 = (float(v) for v in b[0].clamp(min=0))
        x1, y1 = min(x1, pil.width), min(y1, pil.height)
        dense, scale = self._dense(pil)
        feature = self.encoder.box_pooler(dense, [b * scale])[0]
        probs = self._classify(feature, vocabulary)
        mask = np.zeros((pil.height, pil.width), dtype=bool)
        mask[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))] = True
        seconds = {"total": time.perf_counter() - t0}
        return RegionQuery(vocabulary, probs, mask, (x0, y0, x1, y1), self.name, seconds)

    @torch.no_grad()
    def query_mask(self, image, mask, vocabulary) -> RegionQuery:
        """The classes of a binary (H, W) mask of the image: mask pooling of the dense map (a mask
        smaller than one token is pooled over the tokens it touches)."""
        t0 = time.perf_counter()
        vocabulary = as_vocabulary(vocabulary)
        pil = to_pil_rgb(image)
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (pil.height, pil.width):
            raise ValueError(
                f"the mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                f"{pil.width}x{pil.height}"
            )
        if not mask.any():
            raise ValueError("the mask is empty: it selects no pixel")
        dense, scale = self._dense(pil)
        tokens = self.encoder.preprocess_masks(mask[None])
        if not tokens.any():  # smaller than a token: the tokens under its pixels
            ys, xs = np.nonzero(mask)
            p = self.encoder.patch_size
            tokens[0, (ys * scale / p).astype(int), (xs * scale / p).astype(int)] = True
        feature = pool_masks(dense, [tokens.to(dense.device)])[0]
        probs = self._classify(feature, vocabulary)
        ys, xs = np.nonzero(mask)
        box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        seconds = {"total": time.perf_counter() - t0}
        return RegionQuery(vocabulary, probs, mask, box, self.name, seconds)

    def query_point(
        self, image, point: Sequence[float], vocabulary, segmentation: Segmentation | None = None
    ) -> RegionQuery:
        """The classes of the segment under ``point`` ``(x, y)``: the connected region of the
        pixels predicted as the point's class (``segmentation``: a prediction of this image and
        vocabulary; made when not given), classified by :meth:`query_mask`."""
        from scipy import ndimage

        t0 = time.perf_counter()
        pil = to_pil_rgb(image)
        vocabulary = as_vocabulary(vocabulary)
        px, py = (float(v) for v in point)
        if not (0 <= px < pil.width and 0 <= py < pil.height):
            raise ValueError(
                f"the point ({px:g}, {py:g}) is outside the {pil.width}x{pil.height} image"
            )
        if segmentation is None:
            segmentation = self.segment(pil, vocabulary)
        elif segmentation.vocabulary.names != vocabulary.names:
            raise VocabularyError("the segmentation was made with another vocabulary")
        labels = segmentation.labels.numpy()
        if labels.shape != (pil.height, pil.width):
            raise ValueError("the segmentation is of another image size")
        regions, _ = ndimage.label(labels == labels[int(py), int(px)])
        result = self.query_mask(pil, regions == regions[int(py), int(px)], vocabulary)
        return dataclasses.replace(result, seconds={"total": time.perf_counter() - t0})


def _score_classes(scores: torch.Tensor, vocabulary: Vocabulary) -> torch.Tensor:
    """Scores over the queried vocabulary -> over the scored classes (VOC-20b style query lists:
    every surplus query counts as the last class, by its best score)."""
    surplus = vocabulary.surplus_index
    if surplus is None or len(scores) == len(vocabulary):
        return scores
    head = scores[:surplus]
    tail = scores[surplus:].amax(0, keepdim=True)
    return torch.cat([head, tail])


def compare(predictors: Sequence[OpenVocabPredictor], image, vocabulary) -> list[Segmentation]:
    """Each predictor's :meth:`~OpenVocabPredictor.segment` of the same image and vocabulary."""
    if not predictors:
        raise ValueError("compare needs at least one predictor")
    vocabulary = as_vocabulary(vocabulary)
    pil = to_pil_rgb(image)
    return [p.segment(pil, vocabulary) for p in predictors]
