"""Class vocabularies -> text embeddings with an open_clip text tower: the one route every model
and tool takes (through :meth:`densevlm_d2.modeling.CLIPViTBackbone.text_embeddings`), with one
cache.

What is computed is described by a :class:`TextSpec`: the prompt set and prompt style
(:mod:`densevlm_d2.clip.prompts`), how synonyms are used, whether the template embeddings are
averaged (a prompt ensemble) and re-normalised. For every text unit (a class name, or one of its
synonyms) each prompt is encoded by the text tower and L2-normalised; with ``ensemble`` the unit's
embedding is the mean over the templates, re-normalised unless ``renormalize=False`` (which
reproduces the published 316-class files, row norms about 0.90-0.94); without it the unit keeps
one embedding per template (CAT-Seg's cost volume).

Synonyms (:data:`SYNONYM_MODES`; a class name lists them separated by commas, ``"tv,
television"``):

* ``"joint"``: the whole string in each prompt (the published 316-class generator);
* ``"mean"``: each synonym encoded on its own, the class embedding their mean;
* ``"first"``: the first synonym only (CAT-Seg);
* ``"max"``: one query per synonym (a model that scores per query takes a class's best synonym:
  the training-free segmenter, as SCLIP does); the rows are then the vocabulary's synonym queries.

Cache: results are kept in memory and, with a cache folder, on disk as ``.npy`` files (float32,
one row per class or query) with a ``.json`` beside each that says what they are. Both are keyed
by the model, a digest of the text tower's weights, the names and every field of the spec, so a
changed checkpoint, vocabulary or prompt is always a miss; a damaged disk entry is recomputed.
Embeddings computed with autograd (a text tower that trains) are never cached.

A precomputed file (the published ``.npy`` class embeddings) replaces the computation for one
vocabulary, and can never silently belong to another CLIP: :func:`load_text_embeddings` checks its
size against the vocabulary and the model's embedding width; the model it was made with, from the
``.json`` written beside it (model, text-tower digest, classes) or, for the published files that
have none, from their release names (:data:`PUBLISHED_EMBEDDINGS`), must be the backbone's. A file
that says nothing of its model is compared with the backbone's own text tower on a few classes
(:func:`check_embedding_space`). Every mismatch is an error naming both models.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from ..utils.files import atomic_write
from .prompts import PROMPT_SETS, PROMPT_STYLES, prompt_templates, prompts
from .vocabulary import Vocabulary, first_difference, split_synonyms

__all__ = [
    "DEFAULT_TEXT_SPEC",
    "PUBLISHED_EMBEDDINGS",
    "SYNONYM_MODES",
    "TextEmbedder",
    "TextSpec",
    "check_embedding_space",
    "default_cache_dir",
    "embeddings_model",
    "encode_tokens",
    "load_text_embeddings",
    "load_tokenizer",
    "save_text_embeddings",
    "text_tower_digest",
]

logger = logging.getLogger(__name__)

SYNONYM_MODES = ("joint", "mean", "first", "max")


@dataclass(frozen=True)
class TextSpec:
    """How a vocabulary becomes text embeddings (see the module docstring).

    ``prompts``: a prompt-set name of :data:`~densevlm_d2.clip.prompts.PROMPT_SETS` or a list of
    templates; ``style``: :data:`~densevlm_d2.clip.prompts.PROMPT_STYLES`; ``synonyms``:
    :data:`SYNONYM_MODES`; ``renormalize``: L2-normalise the ensembled embedding; ``ensemble``:
    average over the templates (False: one embedding per template, ``(K, P, D)``).
    """

    prompts: str | tuple[str, ...] = "vild"
    style: str = "densevlm"
    synonyms: str = "joint"
    renormalize: bool = True
    ensemble: bool = True

    def __post_init__(self):
        if not isinstance(self.prompts, str):
            prompts = tuple(self.prompts)
            if len(prompts) == 1 and prompts[0] in PROMPT_SETS:  # ["vild"] (a config) is "vild"
                prompts = prompts[0]
            object.__setattr__(self, "prompts", prompts)
        prompt_templates(self.prompts)  # a clear error for an unknown set or a bad template
        if self.style not in PROMPT_STYLES:
            raise ValueError(f"prompt style must be one of {PROMPT_STYLES}, got {self.style!r}")
        if self.synonyms not in SYNONYM_MODES:
            raise ValueError(f"synonyms must be one of {SYNONYM_MODES}, got {self.synonyms!r}")
        if self.synonyms == "max" and not self.ensemble:
            raise ValueError("synonyms 'max' needs ensembled embeddings (one per query)")

    @property
    def templates(self) -> tuple[str, ...]:
        return prompt_templates(self.prompts)

    def fields(self) -> dict:
        """What identifies the embeddings this spec makes (for cache keys and file metadata)."""
        return {
            "templates": list(self.templates),
            "style": self.style,
            "synonyms": self.synonyms,
            "renormalize": self.renormalize,
            "ensemble": self.ensemble,
        }


#: the published DenseVLM generator's embeddings (ViLD's 63 templates, DenseVLM style, the whole
#: synonym string, re-normalised)
DEFAULT_TEXT_SPEC = TextSpec()


def default_cache_dir() -> Path:
    """``$DENSEVLM_CACHE`` or ``~/.cache/densevlm_d2``, then ``text_embeddings/``."""
    root = os.environ.get("DENSEVLM_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "densevlm_d2"
    )
    return Path(root) / "text_embeddings"


def _units(vocabulary: Vocabulary, synonyms: str) -> list[list[str]]:
    """The text units of each output row: one row per class (per synonym query for "max"), each
    row the mean of its units' embeddings."""
    if synonyms == "joint":
        return [[name] for name in vocabulary.names]
    if synonyms == "first":
        return [[split_synonyms(name)[0]] for name in vocabulary.names]
    if synonyms == "mean":
        return [list(split_synonyms(name)) for name in vocabulary.names]
    return [[query] for query in vocabulary.synonym_queries()[0]]


#: the published class-embedding files (DenseVLM, CLIPSelf and DeCLIP ``metadata/*.npy``, named
#: ``<vocabulary>_clip_hand_craft_<model>.npy``) have no ``.json``: the model they were made with,
#: read off the end of the name (open_clip names; OpenAI's B/16 serves both GELU spellings)
PUBLISHED_EMBEDDINGS: dict[str, tuple[str, ...]] = {
    "_clip_hand_craft_EVACLIP_ViTB16.npy": ("EVA02-B-16",),
    "_clip_hand_craft_EVACLIP_ViTL14x336.npy": ("EVA02-L-14-336",),
    "_clip_hand_craft_ViTB16.npy": ("ViT-B-16-quickgelu", "ViT-B-16"),
    "_clip_hand_craft_ViTL14x336.npy": ("ViT-L-14-336",),
    "_clip_hand_craft_siglip-so400m-patch14-384.npy": ("ViT-SO400M-14-SigLIP-384",),
}

#: rows of a file without a model name that :func:`check_embedding_space` compares, and the mean
#: cosine they must reach against the backbone's own text tower (one prompt against a file's
#: ensemble of the same model: about 0.8-0.95; another CLIP's embedding space: about 0)
SPOT_CHECK_ROWS, SPOT_CHECK_COSINE = 4, 0.5


def _sidecar(path: Path) -> Path:
    return (
        path.with_name(path.name + ".json") if path.suffix != ".npy" else path.with_suffix(".json")
    )


def load_text_embeddings(
    path: str | os.PathLike,
    vocabulary: Vocabulary | None = None,
    dim: int | None = None,
    model_name: str | None = None,
    rows: int | None = None,
    weights: str | Callable[[], str] | None = None,
) -> torch.Tensor:
    """Read a ``.npy`` embedding file (the published layout: float32, one row per class),
    checked against the vocabulary (``rows``, default its size), the model's embedding size
    ``dim``, and the model ``model_name`` (open_clip name) and text-tower digest ``weights``
    (:func:`text_tower_digest`, or a function returning it, called only when the file's ``.json``
    names its weights) when the file says which it was made with (:func:`embeddings_model`; the
    ``.json`` beside it also names its classes). Never unpickles."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text embedding file not found: {path}")
    try:
        arr = np.load(path, allow_pickle=False)  # object arrays are refused
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(
            f"text embedding file {path} cannot be read as a .npy array: {e}"
        ) from None
    if arr.ndim not in (2, 3) or not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(
            f"{path}: expected a (num_classes, dim) float array, got {arr.dtype} of shape "
            f"{arr.shape}"
        )
    expected = rows if rows is not None else (len(vocabulary) if vocabulary is not None else None)
    if expected is not None and arr.shape[0] != expected:
        what = f" of {vocabulary.source}" if vocabulary is not None else ""
        raise ValueError(
            f"{path} has {arr.shape[0]} class embeddings but the vocabulary{what} has "
            f"{expected} classes"
        )
    if dim is not None and arr.shape[-1] != dim:
        raise ValueError(
            f"{path} has {arr.shape[-1]}-d embeddings but the model's embedding size is {dim}"
        )
    flat = arr.reshape(arr.shape[0], -1)
    bad = np.nonzero(~np.isfinite(flat).all(1) | ~flat.any(1))[0]
    if len(bad):
        raise ValueError(
            f"{path}: rows {bad[:10].tolist()} are not finite or all zero (classes cannot be "
            "scored against them)"
        )
    _check_sidecar(path, vocabulary, model_name, weights)
    return torch.from_numpy(arr.astype(np.float32, copy=False))


def _read_sidecar(path: Path) -> dict:
    """The ``.json`` description written beside an embedding file, or ``{}`` without one."""
    meta_path = _sidecar(path)
    if not meta_path.is_file():
        return {}
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{meta_path} (the description of {path}) cannot be read: {e}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path} (the description of {path}) is not a JSON object")
    return meta


def embeddings_model(path: str | os.PathLike) -> tuple[tuple[str, ...], str] | None:
    """The model(s) an embedding file says it was made with, and where it says so (its ``.json``,
    or its published release name); None when it says nothing."""
    path = Path(path)
    made_for = _read_sidecar(path).get("model")
    if made_for:
        return (str(made_for),), f"says {_sidecar(path).name}"
    for suffix, models in PUBLISHED_EMBEDDINGS.items():
        if path.name.endswith(suffix):
            return models, "by its published file name"
    return None


def _check_sidecar(
    path: Path,
    vocabulary: Vocabulary | None,
    model_name: str | None,
    weights: str | Callable[[], str] | None,
) -> None:
    """What an embedding file says it was made for (model, text-tower weights, classes) against
    what it is used with: a mismatch is an error naming both."""
    made_for = embeddings_model(path)
    if model_name is not None and made_for is not None and model_name not in made_for[0]:
        raise ValueError(
            f"{path} holds text embeddings of {' / '.join(made_for[0])} ({made_for[1]}) but is "
            f"used with {model_name}: embeddings of one CLIP cannot score another's features"
        )
    meta = _read_sidecar(path)
    meta_path = _sidecar(path)
    made_with = meta.get("weights")
    if callable(weights) and made_with is not None:
        weights = weights()
    if weights is not None and made_with is not None and made_with != weights:
        raise ValueError(
            f"{path} was made with another text tower: {meta.get('model', '?')} with text-tower "
            f"weights {made_with} (says {meta_path.name}), used with {model_name or 'a model'} "
            f"whose text-tower weights are {weights}: recompute it with this checkpoint (or drop "
            "'weights' from the .json if the difference is known to be harmless)"
        )
    names = meta.get("names")
    if vocabulary is not None and names is not None and list(names) != list(vocabulary.names):
        diff = first_difference(names, vocabulary.names)
        raise ValueError(
            f"{path} was made for other classes than the vocabulary of {vocabulary.source} "
            f"(says {meta_path.name}): first difference at index {diff}"
        )


def check_embedding_space(
    embeddings: torch.Tensor, vocabulary: Vocabulary, embedder: TextEmbedder, path
) -> float:
    """Check that class embeddings read from ``path`` (which names no model) live in
    ``embedder``'s text space: its first :data:`SPOT_CHECK_ROWS` classes are embedded by the
    backbone's text tower with one prompt and compared row by row; a mean cosine below
    :data:`SPOT_CHECK_COSINE` is an error naming the backbone's model and the file's unknown one.
    Returns the mean cosine."""
    n = min(SPOT_CHECK_ROWS, len(vocabulary))
    sample = Vocabulary.from_names(vocabulary.names[:n])
    spec = TextSpec(prompts=("a photo of a {}.",))
    mine = embedder.compute(sample, spec)
    cosine = float(F.cosine_similarity(mine, embeddings[:n].float(), dim=-1).mean())
    if cosine < SPOT_CHECK_COSINE:
        raise ValueError(
            f"{path} does not hold {embedder.model_name}'s text embeddings: its first {n} rows "
            f"({', '.join(sample.names)}) agree with this CLIP's text tower by a mean cosine of "
            f"{cosine:.2f} (the same model's: above {SPOT_CHECK_COSINE}), so it was made with "
            "another model, which it does not name (no .json beside it, no published file name). "
            "Give the file made for this CLIP, or let the text tower compute the embeddings"
        )
    return cosine


def save_text_embeddings(
    embeddings: torch.Tensor, path: str | os.PathLike, description: dict | None = None
) -> Path:
    """Write ``(K, D)`` embeddings as a float32 ``.npy`` (atomically), and ``description`` (the
    model, the names, the spec) as the ``.json`` beside it."""
    path = Path(path)
    with atomic_write(path) as f:
        np.save(f, embeddings.detach().float().cpu().numpy())
    if description is not None:
        with atomic_write(_sidecar(path), binary=False) as f:
            json.dump(description, f, indent=1)
    return path


def _cache_problem(
    path: Path, rows: int, spec: TextSpec, dim: int, description: dict
) -> str | None:
    """What is wrong with a cache file, or None when it is intact: its array (type, rows, the
    model's width ``dim``, finite values, norms) and the ``.json`` beside it (the model and
    text-tower weights of ``description``, which its name is a digest of)."""
    try:
        arr = np.load(path, allow_pickle=False)
        meta = _read_sidecar(path)
    except (OSError, ValueError, EOFError) as e:
        return f"unreadable: {e}"
    said = {k: meta.get(k) for k in ("model", "weights")}
    if said != {k: description[k] for k in said}:
        return f"its .json describes {said}, not { ({k: description[k] for k in said}) }"
    ndim = 2 if spec.ensemble else 3
    if arr.dtype != np.float32 or arr.ndim != ndim or arr.shape[0] != rows:
        return f"{arr.dtype} array of shape {arr.shape}, expected float32 with {rows} rows"
    if arr.shape[-1] != dim:
        return f"{arr.shape[-1]}-d rows, but {description['model']} embeds in {dim}-d"
    if not np.isfinite(arr).all():
        return "non-finite values"
    norms = np.linalg.norm(arr, axis=-1)
    low = 0.999 if (spec.renormalize or not spec.ensemble) else 1e-3
    if (norms < low).any() or (norms > 1.001).any():
        return f"row norms between {norms.min():.3g} and {norms.max():.3g}"
    return None


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
    """Storage and in-place version counter of each text-tower parameter and buffer: changes
    whenever weights are loaded, modified in place (an optimiser step) or moved, without reading
    the values. (Read off the tensors themselves, not ``state_dict()``, whose state-dict hooks may
    build new tensors on every call.)"""
    tensors = itertools.chain(model.named_parameters(), model.named_buffers())
    return tuple(
        (k, v.data_ptr(), v._version, str(v.dtype)) for k, v in tensors if k.startswith(_TEXT_KEYS)
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


def load_tokenizer(model_name: str):
    """open_clip's tokenizer for an open_clip config name; a clear error when it cannot be made.

    SigLIP 2 (and other models whose config names a Hugging Face tokenizer) need the
    ``transformers`` package and the tokenizer's files in the Hugging Face cache: nothing is
    downloaded where there is no network, and no other tokenizer is substituted."""
    try:
        return open_clip.get_tokenizer(model_name)
    except (ImportError, OSError, ValueError) as e:
        text_cfg = (open_clip.get_model_config(model_name) or {}).get("text_cfg", {})
        source = text_cfg.get("hf_tokenizer_name") or "its Hugging Face tokenizer"
        raise RuntimeError(
            f"the text tokenizer of {model_name} cannot be loaded ({type(e).__name__}: {e}). It "
            f"is the Hugging Face tokenizer {source!r}: it needs the `transformers` package and "
            "the tokenizer's files in the Hugging Face cache (HF_HOME; set HF_HUB_OFFLINE=1 "
            "without network). Without it, give this CLIP's class embeddings precomputed "
            "(MODEL.CLIP.TEXT_EMBEDDINGS, or TEACHER.TEXT_EMBEDDINGS for a teacher) or pass a "
            "tokenizer explicitly (TextEmbedder(tokenizer=...))"
        ) from e


class TextEmbedder:
    """Vocabularies -> text embeddings with an open_clip model's text tower, cached in memory and
    (``cache_dir``; None: no disk cache) on disk; see the module docstring."""

    #: vocabularies kept in memory per embedder (least recently used dropped first)
    MEMORY_ENTRIES = 32

    def __init__(
        self,
        model: torch.nn.Module,
        model_name: str,
        cache_dir: str | os.PathLike | None = "default",
        batch_size: int = 256,
        tokenizer=None,
    ):
        """``tokenizer``: texts -> token ids for this text tower; default: the model's own
        (:func:`load_tokenizer`), loaded when first needed (reading precomputed embeddings, or
        checking them against the weights' digest, needs none)."""
        from .models import open_clip_name

        self.model = model
        self.model_name = open_clip_name(model_name)
        self._tokenizer = tokenizer
        self.cache_dir = (
            default_cache_dir()
            if cache_dir == "default"
            else (Path(cache_dir) if cache_dir else None)
        )
        self.batch_size = batch_size
        self._weights_digest: tuple[tuple, str] | None = None
        self._memory: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.model_name)
        return self._tokenizer

    # -- identity of the text tower ------------------------------------------------------------
    def weights_digest(self) -> str:
        """Digest of the text tower (token embedding, transformer, final norm, projection);
        recomputed only when its tensors were loaded, changed in place or moved since the last
        call."""
        signature = _text_state_signature(self.model)
        if self._weights_digest is None or self._weights_digest[0] != signature:
            self._weights_digest = (signature, text_tower_digest(self.model))
        return self._weights_digest[1]

    def description(self, names: Sequence[str], spec: TextSpec) -> dict:
        """What embeddings of ``names`` under ``spec`` are: written beside cache files."""
        return {
            "model": self.model_name,
            "weights": self.weights_digest(),
            "names": list(names),
            **spec.fields(),
        }

    def cache_path(self, vocabulary: Vocabulary, spec: TextSpec) -> Path | None:
        if self.cache_dir is None:
            return None
        payload = json.dumps(self.description(vocabulary.names, spec), sort_keys=True)
        key = hashlib.sha256(payload.encode()).hexdigest()[:32]
        return self.cache_dir / f"{self.model_name}-{len(vocabulary)}-{key}.npy"

    # -- computing -----------------------------------------------------------------------------
    def _encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Raw strings -> (N, D) L2-normalised float32 embeddings on the model's device (autograd
        follows the caller's context)."""
        device = next(self.model.parameters()).device
        tokens = self.tokenizer(list(texts)).to(device)
        return F.normalize(encode_tokens(self.model, tokens).float(), dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Raw strings -> (N, D) L2-normalised text embeddings on the CPU, ``batch_size`` at a
        time (no prompt templates)."""
        if isinstance(texts, str) or not texts:
            raise ValueError(f"expected a non-empty list of strings, got {texts!r}")
        return torch.cat(
            [
                self._encode(texts[i : i + self.batch_size]).cpu()
                for i in range(0, len(texts), self.batch_size)
            ]
        )

    def compute(
        self,
        vocabulary: Vocabulary,
        spec: TextSpec,
        *,
        grad: bool = False,
        progress: bool | None = None,
    ) -> torch.Tensor:
        """The embeddings, uncached: ``(R, D)`` with ``spec.ensemble`` (R: classes, or synonym
        queries for "max"), else ``(R, P, D)``. Float32, on the CPU; with ``grad`` on the model's
        device with autograd. The prompts of several units go through the text tower together,
        ``batch_size`` prompts at a time, so memory stays bounded for any vocabulary; a progress
        bar shows for large vocabularies (``progress=None``: more than 5,000 prompts)."""
        from tqdm import tqdm

        templates = spec.templates
        units = _units(vocabulary, spec.synonyms)
        flat = [u for per_row in units for u in per_row]
        per_batch = max(1, self.batch_size // len(templates))
        if progress is None:
            progress = len(flat) * len(templates) > 5000
        chunks = []
        with torch.set_grad_enabled(grad):
            for i in tqdm(
                range(0, len(flat), per_batch),
                desc=f"text embeddings ({len(vocabulary)} names x {len(templates)} templates)",
                disable=not progress,
                unit="batch",
            ):
                chunk = flat[i : i + per_batch]
                texts = [p for unit in chunk for p in prompts(unit, templates, spec.style)]
                emb = self._encode(texts)
                emb = (emb if grad else emb.cpu()).view(len(chunk), len(templates), -1)
                chunks.append(emb.mean(1) if spec.ensemble else emb)
            per_unit = torch.cat(chunks)
            rows, start = [], 0
            for per_row in units:
                row = per_unit[start : start + len(per_row)].mean(0)
                start += len(per_row)
                renormalize = spec.ensemble and spec.renormalize
                rows.append(F.normalize(row, dim=0) if renormalize else row)
            return torch.stack(rows)

    def __call__(
        self, vocabulary: Vocabulary, spec: TextSpec = DEFAULT_TEXT_SPEC, *, grad: bool = False
    ) -> torch.Tensor:
        """:meth:`compute`, through the caches (not with ``grad``). A damaged cache file
        (unreadable, wrong shape or type, non-finite rows, wrong norms) is recomputed and
        rewritten, with a warning naming it. Files are written atomically, so processes filling
        the same cache at once each write a whole file."""
        vocabulary = Vocabulary.from_names(vocabulary)
        if grad:
            return self.compute(vocabulary, spec, grad=True)
        key = (_text_state_signature(self.model), vocabulary.names, spec)
        if key in self._memory:
            self._memory.move_to_end(key)
        else:
            self._memory[key] = self._disk_cached(vocabulary, spec)
            while len(self._memory) > self.MEMORY_ENTRIES:
                self._memory.popitem(last=False)
        return self._memory[key].clone()  # what a caller does to its copy never reaches the cache

    def _disk_cached(self, vocabulary: Vocabulary, spec: TextSpec) -> torch.Tensor:
        from .models import embed_dim_of

        path = self.cache_path(vocabulary, spec)
        if path is None:
            return self.compute(vocabulary, spec)
        rows = len(_units(vocabulary, spec.synonyms))
        if path.is_file():
            dim = embed_dim_of(self.model_name)
            problem = _cache_problem(
                path, rows, spec, dim, self.description(vocabulary.names, spec)
            )
            if problem is None:
                logger.info("text embeddings: cache hit %s", path)
                return torch.from_numpy(np.load(path, allow_pickle=False))
            logger.warning(
                "text embeddings: recomputing the damaged cache file %s (%s)", path, problem
            )
        else:
            logger.info(
                "text embeddings: computing %d classes (cache miss %s)", len(vocabulary), path
            )
        emb = self.compute(vocabulary, spec)
        save_text_embeddings(emb, path, self.description(vocabulary.names, spec))
        return emb
