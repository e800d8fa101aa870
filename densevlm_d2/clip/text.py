"""Class names -> text embeddings, as the published generator builds them (docs/published_code.md,
"Text embeddings").

Each name is cleaned (``_`` -> space, ``/`` -> `` or ``, lower case, trailing dots removed), put
into the 63 prompt templates (the ViLD set; templates that start with "a" or "the" get the prefix
"This is "), encoded by the CLIP text tower, L2-normalised per template and averaged over templates.
The average is re-normalised unless ``renormalize=False``, which reproduces the published 316-class
files (row norms about 0.90-0.94; the 133-class COCO and 150-class ADE20K files are unit norm).

Synonyms: a comma-separated name (``"tv, television"``) is, by default, put into each template as
one string, as the published 316-class generator does (``synonyms="joint"``). ``synonyms="split"``
encodes each synonym separately and averages them (the published code's unused alternative).

Embeddings are cached on disk as ``.npy`` files in the published metadata layout (float32, one row
per class), keyed by the model, the text tower's weights, the names, the templates and the options;
see :class:`TextEmbedder`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

__all__ = [
    "TEMPLATES",
    "TextEmbedder",
    "article",
    "clean_name",
    "default_cache_dir",
    "load_text_embeddings",
    "prompts",
    "save_text_embeddings",
    "text_tower_digest",
]

logger = logging.getLogger(__name__)

# The 63 hand-crafted templates of the published generator (from ViLD), in its order.
TEMPLATES: tuple[str, ...] = (
    "There is {article} {} in the scene.",
    "There is the {} in the scene.",
    "a photo of {article} {} in the scene.",
    "a photo of the {} in the scene.",
    "a photo of one {} in the scene.",
    "itap of {article} {}.",
    "itap of my {}.",
    "itap of the {}.",
    "a photo of {article} {}.",
    "a photo of my {}.",
    "a photo of the {}.",
    "a photo of one {}.",
    "a photo of many {}.",
    "a good photo of {article} {}.",
    "a good photo of the {}.",
    "a bad photo of {article} {}.",
    "a bad photo of the {}.",
    "a photo of a nice {}.",
    "a photo of the nice {}.",
    "a photo of a cool {}.",
    "a photo of the cool {}.",
    "a photo of a weird {}.",
    "a photo of the weird {}.",
    "a photo of a small {}.",
    "a photo of the small {}.",
    "a photo of a large {}.",
    "a photo of the large {}.",
    "a photo of a clean {}.",
    "a photo of the clean {}.",
    "a photo of a dirty {}.",
    "a photo of the dirty {}.",
    "a bright photo of {article} {}.",
    "a bright photo of the {}.",
    "a dark photo of {article} {}.",
    "a dark photo of the {}.",
    "a photo of a hard to see {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of {article} {}.",
    "a low resolution photo of the {}.",
    "a cropped photo of {article} {}.",
    "a cropped photo of the {}.",
    "a close-up photo of {article} {}.",
    "a close-up photo of the {}.",
    "a jpeg corrupted photo of {article} {}.",
    "a jpeg corrupted photo of the {}.",
    "a blurry photo of {article} {}.",
    "a blurry photo of the {}.",
    "a pixelated photo of {article} {}.",
    "a pixelated photo of the {}.",
    "a black and white photo of the {}.",
    "a black and white photo of {article} {}.",
    "a plastic {}.",
    "the plastic {}.",
    "a toy {}.",
    "the toy {}.",
    "a plushie {}.",
    "the plushie {}.",
    "a cartoon {}.",
    "the cartoon {}.",
    "an embroidered {}.",
    "the embroidered {}.",
    "a painting of the {}.",
    "a painting of a {}.",
)


def clean_name(name: str) -> str:
    return name.replace("_", " ").replace("/", " or ").lower().rstrip(".")


def article(name: str) -> str:
    """'an' when the raw name starts with a lower-case vowel letter, as published (the raw name, not
    the cleaned)."""
    return "an" if name[:1] in ("a", "e", "i", "o", "u") else "a"


def prompts(name: str, templates: Sequence[str] = TEMPLATES) -> list[str]:
    texts = [t.format(clean_name(name), article=article(name)) for t in templates]
    return ["This is " + t if t.startswith("a") or t.startswith("the") else t for t in texts]


def default_cache_dir() -> Path:
    """``$DENSEVLM_CACHE`` or ``~/.cache/densevlm_d2``, then ``text_embeddings/``."""
    root = os.environ.get("DENSEVLM_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "densevlm_d2"
    )
    return Path(root) / "text_embeddings"


def load_text_embeddings(
    path: str | os.PathLike, num_classes: int | None = None, dim: int | None = None
) -> torch.Tensor:
    """Read a ``.npy`` embedding file (published metadata layout: float32, one row per class),
    checking its size against the vocabulary and the model."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text embedding file not found: {path}")
    arr = np.load(path, allow_pickle=False)
    if arr.ndim != 2:
        raise ValueError(f"{path}: expected a (num_classes, dim) array, got shape {arr.shape}")
    if num_classes is not None and arr.shape[0] != num_classes:
        raise ValueError(
            f"{path} has {arr.shape[0]} class embeddings but the vocabulary has "
            f"{num_classes} classes"
        )
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(
            f"{path} has {arr.shape[1]}-d embeddings but the model's embedding size is {dim}"
        )
    return torch.from_numpy(arr.astype(np.float32, copy=False))


def save_text_embeddings(embeddings: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write ``(K, D)`` embeddings as a float32 ``.npy`` (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, embeddings.detach().float().cpu().numpy())
    os.replace(tmp, path)
    return path


_TEXT_KEYS = (
    "text.",
    "token_embedding.",
    "positional_embedding",
    "transformer.",
    "ln_final.",
    "text_projection",
)


def _text_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    state = {k: v for k, v in model.state_dict().items() if k.startswith(_TEXT_KEYS)}
    if not state:
        raise ValueError(f"{type(model).__name__} has no text tower")
    return state


def text_tower_digest(model: torch.nn.Module) -> str:
    """Digest of an open_clip model's text-tower tensors (``text.*`` or the top-level text modules
    of ``CLIP``)."""
    h = hashlib.blake2b(digest_size=16)
    for key, value in sorted(_text_state(model).items()):
        h.update(key.encode())
        h.update(str(value.dtype).encode())
        h.update(value.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _text_state_signature(model: torch.nn.Module) -> tuple:
    """Storage and in-place version counter of each text-tower tensor: changes whenever weights are
    loaded, modified in place or moved, without reading the values."""
    return tuple(
        (k, v.data_ptr(), v._version, str(v.dtype)) for k, v in sorted(_text_state(model).items())
    )


class TextEmbedder:
    """Class names -> (K, D) text embeddings with an open_clip model's text tower, cached on disk.

    The cache key covers the model name, a digest of the text tower's weights (a changed checkpoint
    is a miss), the names, the templates and the options. ``cache_dir=None`` disables caching.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        model_name: str,
        cache_dir: str | os.PathLike | None = "default",
        batch_size: int = 256,
    ):
        from .models import open_clip_name

        self.model = model
        self.model_name = open_clip_name(model_name)
        self.tokenizer = open_clip.get_tokenizer(self.model_name)
        self.cache_dir = (
            default_cache_dir()
            if cache_dir == "default"
            else (Path(cache_dir) if cache_dir else None)
        )
        self.batch_size = batch_size
        self._weights_digest: tuple[tuple, str] | None = None

    def weights_digest(self) -> str:
        """Digest of the text tower (token embedding, transformer, final norm, projection);
        recomputed only when its tensors were loaded, changed in place or moved since the last
        call."""
        signature = _text_state_signature(self.model)
        if self._weights_digest is None or self._weights_digest[0] != signature:
            self._weights_digest = (signature, text_tower_digest(self.model))
        return self._weights_digest[1]

    def reset_digest(self) -> None:
        """Forget the digest (not needed after in-place changes, which are detected)."""
        self._weights_digest = None

    def cache_key(
        self, names: Sequence[str], templates: Sequence[str], synonyms: str, renormalize: bool
    ) -> str:
        payload = json.dumps(
            {
                "model": self.model_name,
                "weights": self.weights_digest(),
                "names": list(names),
                "templates": list(templates),
                "synonyms": synonyms,
                "renormalize": renormalize,
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:32]

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Raw strings -> (N, D) L2-normalised text embeddings."""
        if not texts:
            raise ValueError("no texts to encode")
        device = next(self.model.parameters()).device
        out = []
        for i in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(list(texts[i : i + self.batch_size])).to(device)
            out.append(F.normalize(self.model.encode_text(tokens).float(), dim=-1))
        return torch.cat(out)

    def _template_mean(self, name: str, templates: Sequence[str]) -> torch.Tensor:
        return self.encode_texts(prompts(name, templates)).mean(0)

    def compute(
        self,
        names: Sequence[str],
        templates: Sequence[str] = TEMPLATES,
        synonyms: str = "joint",
        renormalize: bool = True,
    ) -> torch.Tensor:
        """(K, D) float32 embeddings on the CPU, no cache."""
        if synonyms not in ("joint", "split"):
            raise ValueError(f"synonyms must be 'joint' or 'split', got {synonyms!r}")
        if not names:
            raise ValueError("empty class vocabulary")
        rows = []
        for name in names:
            if synonyms == "split":
                words = [w.strip() for w in name.split(",") if w.strip()]
                row = torch.stack([self._template_mean(w, templates) for w in words]).mean(0)
            else:
                row = self._template_mean(name, templates)
            rows.append(F.normalize(row, dim=0) if renormalize else row)
        return torch.stack(rows).cpu()

    def __call__(
        self,
        names: Sequence[str],
        templates: Sequence[str] = TEMPLATES,
        synonyms: str = "joint",
        renormalize: bool = True,
    ) -> torch.Tensor:
        """(K, D) embeddings, read from the cache when present."""
        if self.cache_dir is None:
            return self.compute(names, templates, synonyms, renormalize)
        key = self.cache_key(names, templates, synonyms, renormalize)
        path = self.cache_dir / f"{self.model_name}-{len(names)}-{key}.npy"
        if path.is_file():
            logger.info("text embeddings: cache hit %s", path)
            return load_text_embeddings(path, num_classes=len(names))
        logger.info("text embeddings: computing %d classes (cache miss %s)", len(names), path)
        emb = self.compute(names, templates, synonyms, renormalize)
        save_text_embeddings(emb, path)
        meta = {
            "model": self.model_name,
            "names": list(names),
            "synonyms": synonyms,
            "renormalize": renormalize,
            "num_templates": len(templates),
        }
        path.with_suffix(".json").write_text(json.dumps(meta, indent=1))
        return emb
