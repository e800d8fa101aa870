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
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

__all__ = [
    "IMAGENET_TEMPLATES",
    "PROMPT_STYLES",
    "TEMPLATES",
    "TextEmbedder",
    "article",
    "check_vocabulary",
    "clean_name",
    "encode_tokens",
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


# The 80 ImageNet prompt templates of OpenAI's CLIP, in the order the training-free segmentation
# code (SCLIP, ClearCLIP, NACLIP, ...) uses them; the names go in raw (prompt style "plain").
IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

#: "densevlm": the published generator's prompts (cleaned name, article, "This is " prefix);
#: "plain": ``template.format(name)`` with the name as given, as OpenAI's zero-shot code does
PROMPT_STYLES = ("densevlm", "plain")


def clean_name(name: str) -> str:
    return name.replace("_", " ").replace("/", " or ").lower().rstrip(".")


def article(name: str) -> str:
    """'an' when the raw name starts with a lower-case vowel letter, as published (the raw name, not
    the cleaned)."""
    return "an" if name[:1] in ("a", "e", "i", "o", "u") else "a"


def prompts(name: str, templates: Sequence[str] = TEMPLATES, style: str = "densevlm") -> list[str]:
    """The prompts of one name (see :data:`PROMPT_STYLES`)."""
    if style == "plain":
        return [t.format(name) for t in templates]
    if style != "densevlm":
        raise ValueError(f"prompt style must be one of {PROMPT_STYLES}, got {style!r}")
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
    try:
        arr = np.load(path, allow_pickle=False)  # never unpickles (object arrays are refused)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(
            f"text embedding file {path} cannot be read as a .npy array: {e}"
        ) from None
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(
            f"{path}: expected a (num_classes, dim) float array, got {arr.dtype} of shape "
            f"{arr.shape}"
        )
    if num_classes is not None and arr.shape[0] != num_classes:
        raise ValueError(
            f"{path} has {arr.shape[0]} class embeddings but the vocabulary has "
            f"{num_classes} classes"
        )
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(
            f"{path} has {arr.shape[1]}-d embeddings but the model's embedding size is {dim}"
        )
    bad = np.nonzero(~np.isfinite(arr).all(1) | ~arr.any(1))[0]
    if len(bad):
        raise ValueError(
            f"{path}: rows {bad[:10].tolist()} are not finite or all zero (classes cannot be "
            "scored against them)"
        )
    return torch.from_numpy(arr.astype(np.float32, copy=False))


def check_vocabulary(names: Sequence[str]) -> list[str]:
    """A vocabulary must be a list (or other sequence) of non-empty strings; repeated names are
    reported with a warning (they get identical embeddings)."""
    if isinstance(names, str | bytes) or not isinstance(names, Sequence):
        raise ValueError(
            f"a vocabulary is a list of class names, got {type(names).__name__} {names!r:.80}"
            + (" (put a single name in a list)" if isinstance(names, str) else "")
        )
    if not names:
        raise ValueError("empty class vocabulary: give at least one class name")
    bad = [(i, n) for i, n in enumerate(names) if not isinstance(n, str) or not n.strip()]
    if bad:
        raise ValueError(
            f"class names must be non-empty strings; at indices {[i for i, _ in bad][:10]}: "
            f"{[n for _, n in bad][:10]}"
        )
    repeated = sorted(n for n, count in Counter(names).items() if count > 1)
    if repeated:
        logger.warning("the vocabulary repeats %s", repeated[:10])
    return list(names)


def _cache_problem(path: Path, num_classes: int, renormalized: bool) -> str | None:
    """What is wrong with a cache file, or None when it is intact."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        return f"unreadable: {e}"
    if arr.dtype != np.float32 or arr.ndim != 2 or arr.shape[0] != num_classes:
        return f"{arr.dtype} array of shape {arr.shape}, expected float32 ({num_classes}, D)"
    if not np.isfinite(arr).all():
        return "non-finite values"
    norms = np.linalg.norm(arr, axis=1)
    low = 0.999 if renormalized else 1e-3
    if (norms < low).any() or (norms > 1.001).any():
        return f"row norms between {norms.min():.3g} and {norms.max():.3g}"
    return None


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_text_embeddings(embeddings: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write ``(K, D)`` embeddings as a float32 ``.npy`` (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
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


def encode_tokens(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """open_clip's ``encode_text`` on tokens trimmed to the longest text of the batch.

    The text towers here attend causally and read the end-of-text token, so the padding after it
    never changes a text's embedding: a batch of prompts 10-20 tokens long costs a fraction of the
    full 77-token pass for the same result (to float rounding). Text towers outside that case
    (class token, padding mask, other pooling) go through ``encode_text`` unchanged.
    """
    tower = getattr(model, "text", None) or model  # CustomTextCLIP's TextTransformer, or CLIP
    pool = getattr(tower, "pool_type", None) or getattr(tower, "text_pool_type", None)
    plain = (
        getattr(tower, "cls_emb", None) is None
        and not getattr(tower, "use_pad_mask", False)
        and pool == "argmax"
        and getattr(tower, "attn_mask", None) is not None
    )
    if not plain:
        return model.encode_text(tokens)
    length = int((tokens != 0).sum(1).max())
    tokens = tokens[:, :length]
    cast = tower.transformer.get_cast_dtype()
    x = tower.token_embedding(tokens).to(cast) + tower.positional_embedding[:length].to(cast)
    x = tower.ln_final(tower.transformer(x, attn_mask=tower.attn_mask[:length, :length]))
    x = x[torch.arange(len(x), device=x.device), tokens.argmax(dim=-1)]
    projection = tower.text_projection
    if projection is None:
        return x
    return projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection


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
        self,
        names: Sequence[str],
        templates: Sequence[str],
        synonyms: str,
        renormalize: bool,
        style: str = "densevlm",
    ) -> str:
        fields = {
            "model": self.model_name,
            "weights": self.weights_digest(),
            "names": list(names),
            "templates": list(templates),
            "synonyms": synonyms,
            "renormalize": renormalize,
        }
        if style != "densevlm":  # keys of the published style stay what they were
            fields["style"] = style
        payload = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:32]

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Raw strings -> (N, D) L2-normalised text embeddings, ``batch_size`` at a time."""
        if isinstance(texts, str) or not texts:
            raise ValueError(f"expected a non-empty list of strings, got {texts!r}")
        device = next(self.model.parameters()).device
        out = []
        for i in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(list(texts[i : i + self.batch_size])).to(device)
            out.append(F.normalize(encode_tokens(self.model, tokens).float(), dim=-1).cpu())
        return torch.cat(out)

    def compute(
        self,
        names: Sequence[str],
        templates: Sequence[str] = TEMPLATES,
        synonyms: str = "joint",
        renormalize: bool = True,
        progress: bool | None = None,
        style: str = "densevlm",
    ) -> torch.Tensor:
        """(K, D) float32 embeddings on the CPU, no cache. The prompts of several names go through
        the text tower together (``batch_size`` prompts at a time), so memory stays bounded for any
        vocabulary size; a progress bar is shown for large vocabularies (``progress=None``: when
        there are more than 5,000 prompts)."""
        from tqdm import tqdm

        if synonyms not in ("joint", "split"):
            raise ValueError(f"synonyms must be 'joint' or 'split', got {synonyms!r}")
        if style not in PROMPT_STYLES:
            raise ValueError(f"prompt style must be one of {PROMPT_STYLES}, got {style!r}")
        names = check_vocabulary(names)
        templates = list(templates)
        # one "unit" per name (joint) or per synonym (split); a unit's embedding is the mean of its
        # L2-normalised prompt embeddings
        units = [
            [w.strip() for w in name.split(",") if w.strip()] if synonyms == "split" else [name]
            for name in names
        ]
        flat = [u for per_name in units for u in per_name]
        per_batch = max(1, self.batch_size // len(templates))
        if progress is None:
            progress = len(flat) * len(templates) > 5000
        means = []
        for i in tqdm(
            range(0, len(flat), per_batch),
            desc=f"text embeddings ({len(names)} names x {len(templates)} templates)",
            disable=not progress,
            unit="batch",
        ):
            chunk = flat[i : i + per_batch]
            texts = [p for unit in chunk for p in prompts(unit, templates, style)]
            means.append(self.encode_texts(texts).view(len(chunk), len(templates), -1).mean(1))
        means = torch.cat(means)
        rows, start = [], 0
        for per_name in units:
            row = means[start : start + len(per_name)].mean(0)
            start += len(per_name)
            rows.append(F.normalize(row, dim=0) if renormalize else row)
        return torch.stack(rows)

    def __call__(
        self,
        names: Sequence[str],
        templates: Sequence[str] = TEMPLATES,
        synonyms: str = "joint",
        renormalize: bool = True,
        style: str = "densevlm",
    ) -> torch.Tensor:
        """(K, D) embeddings, read from the cache when present and intact. A damaged cache file
        (unreadable, wrong shape or type, non-finite or zero rows, wrong norms) is recomputed and
        rewritten, with a warning naming it. Files are written atomically, so processes filling the
        same cache at once each write a whole file."""
        names = check_vocabulary(names)
        if self.cache_dir is None:
            return self.compute(names, templates, synonyms, renormalize, style=style)
        key = self.cache_key(names, templates, synonyms, renormalize, style)
        path = self.cache_dir / f"{self.model_name}-{len(names)}-{key}.npy"
        if path.is_file():
            problem = _cache_problem(path, len(names), renormalize)
            if problem is None:
                logger.info("text embeddings: cache hit %s", path)
                return load_text_embeddings(path, num_classes=len(names))
            logger.warning(
                "text embeddings: recomputing the damaged cache file %s (%s)", path, problem
            )
        else:
            logger.info("text embeddings: computing %d classes (cache miss %s)", len(names), path)
        emb = self.compute(names, templates, synonyms, renormalize, style=style)
        save_text_embeddings(emb, path)
        meta = {
            "model": self.model_name,
            "names": list(names),
            "synonyms": synonyms,
            "renormalize": renormalize,
            "style": style,
            "num_templates": len(templates),
        }
        _atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=1))
        return emb
