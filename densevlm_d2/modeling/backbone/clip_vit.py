"""The CLIP ViT backbone: the one owner of an open_clip model in densevlm_d2.

:class:`CLIPViTBackbone` holds an upstream open_clip model (EVA02-CLIP or OpenAI-style) and is the
only place the rest of the project reaches it through:

* features: the detectron2 ``forward`` (dense map and block outputs at stride = patch), and
  :meth:`~CLIPViTBackbone.features` (the same pass with the CLS image embedding on demand);
* crops: :meth:`~CLIPViTBackbone.encode_crops` (CLS embeddings of region crops, batched);
* text: :meth:`~CLIPViTBackbone.text_embeddings` (a vocabulary's class embeddings: the one route
  from class names to embeddings, cached in memory and on disk, or this CLIP's precomputed file
  for that vocabulary), :meth:`~CLIPViTBackbone.text_queries` (per-synonym queries) and
  :meth:`~CLIPViTBackbone.encode_text` (raw strings);
* weights: strict loading at construction, :meth:`~CLIPViTBackbone.save` in the EVA-CLIP and
  open_clip layouts, the weights before training (:attr:`~CLIPViTBackbone.initial_state`) and the
  published weight-space blend (:meth:`~CLIPViTBackbone.blended`).

The open_clip model is :attr:`CLIPViTBackbone.model`. A model's student CLIP is the one
``CLIPViTBackbone`` inside its ``backbone`` (:func:`get_clip_backbone`): that is the CLIP the
checkpointer reads raw CLIP files into, the trainer blends and the export hook writes. Frozen
teachers are ``CLIPViTBackbone(teacher=True)`` modules outside the backbone; they are rebuilt from
their own files when a model is built and are left out of detectron2 checkpoints.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import nn

from ...clip.checkpoint import (
    CheckpointFormat,
    blend_state_dicts,
    load_checkpoint,
    save_checkpoint,
)
from ...clip.finetune import FINETUNE_MODES, attention_qv_parameters
from ...clip.models import build_clip_model, open_clip_name
from ...clip.text import DEFAULT_TEXT_SPEC, TextEmbedder, TextSpec, load_text_embeddings
from ...clip.towers import EvaTower, TowerOutput, vision_tower
from ...clip.vocabulary import Vocabulary

__all__ = [
    "CLIPViTBackbone",
    "embeddings_files",
    "get_clip_backbone",
    "parse_out_features",
    "text_cache_dir",
]

logger = logging.getLogger(__name__)


def parse_out_features(names, num_blocks: int) -> tuple[bool, list[int]]:
    """``["dense", "block3", ...]`` -> (dense wanted, sorted block indices); a clear error for
    anything else."""
    dense, blocks = False, []
    for name in names:
        if name == "dense":
            dense = True
        elif name.startswith("block") and name[5:].isdigit() and int(name[5:]) < num_blocks:
            blocks.append(int(name[5:]))
        else:
            raise ValueError(
                f"unknown CLIP backbone output {name!r}: use 'dense' or 'block<i>' with "
                f"0 <= i < {num_blocks}"
            )
    if not dense and not blocks:
        raise ValueError("the CLIP backbone needs at least one output feature")
    return dense, sorted(set(blocks))


@BACKBONE_REGISTRY.register()
class CLIPViTBackbone(Backbone):
    """Dense CLIP features and intermediate block outputs, all at stride = patch size, and every
    other use of the CLIP model (see the module docstring).

    Outputs (``out_features``): ``"dense"`` -> (B, D, H/p, W/p) L2-normalised projected tokens, the
    last block through its value path, as the published ``encode_dense``; ``"block<i>"`` -> (B, C,
    H/p, W/p) tokens after block ``i`` (the last block through its value path, as F-ViT takes it).

    ``finetune`` (:data:`~densevlm_d2.clip.finetune.FINETUNE_MODES`) says what trains:
    ``"frozen"``: nothing (``forward`` runs without autograd and the model stays in eval mode).
    ``"blocks"``: the last ``trainable_blocks`` (> 0) vision blocks; embeddings, final norm,
    projection and the text tower never train, nor do the last block's query/key projections,
    which the value path never uses. ``"attention"``: the query and value projection weights of
    every attention layer of both towers (CAT-Seg; again not the last vision block's query, which
    the value path never uses). ``"full"``: every parameter but the logit scale. A trainable CLIP
    keeps a CPU copy of its trainable weights as they were when it was built
    (:attr:`initial_state`) for :meth:`blended`.

    ``text_embeddings_files``: precomputed class embeddings of this CLIP, ``{vocabulary name:
    .npy}`` (see :meth:`text_embeddings`).

    ``teacher``: a frozen CLIP that a training method distils from; it is rebuilt from
    ``checkpoint`` whenever the model is built and is not saved in detectron2 checkpoints.
    """

    @configurable
    def __init__(
        self,
        *,
        model_name: str,
        checkpoint: str | os.PathLike = "",
        out_features: Sequence[str] = ("dense",),
        finetune: str = "frozen",
        trainable_blocks: int = 0,
        grad_checkpointing: bool = False,
        text_cache_dir: str | os.PathLike | None = "default",
        text_embeddings_files: Mapping[str, str | os.PathLike] | None = None,
        teacher: bool = False,
        model: nn.Module | None = None,
        checkpoint_role: str = "CLIP checkpoint",
        random_init: bool = False,
        tokenizer=None,
    ):
        """``model``: an open_clip model of that architecture built already (default: a new one).
        ``checkpoint_role``: what ``checkpoint`` is, for error messages (e.g. its config key).
        ``random_init``: a new model without ``checkpoint`` is randomly initialised on purpose, or
        gets its weights afterwards from a caller that checks them (the config path: detectron2's
        checkpointer with ``MODEL.CLIP.RANDOM_INIT``); otherwise such a model is built with a
        warning, as :func:`~densevlm_d2.load_clip` refuses it without ``random_init=True``.
        ``tokenizer``: the text tower's tokenizer (default: the model's own; see
        :func:`~densevlm_d2.clip.text.load_tokenizer`)."""
        super().__init__()
        self.model_name = open_clip_name(model_name)
        if not checkpoint and model is None and not random_init:
            warnings.warn(
                f"CLIPViTBackbone({model_name!r}) has no checkpoint: its weights are RANDOM. Pass "
                "checkpoint=<file, hf:// reference or model-zoo name>, or random_init=True to "
                "build random weights on purpose",
                UserWarning,
                stacklevel=3,  # the caller, past detectron2's @configurable wrapper
            )
        #: the open_clip model
        self.model = model if model is not None else build_clip_model(model_name)
        #: where the weights came from: the checkpoint file, or None while randomly initialised
        self.weights_source: str | None = None
        if checkpoint:
            fmt = load_checkpoint(self.model, checkpoint, role=checkpoint_role)
            self.weights_source = str(checkpoint)
            logger.info("CLIP %s: loaded %s (%s layout)", model_name, checkpoint, fmt.value)
        self.tower = vision_tower(self.model.visual)
        self.tower.grad_checkpointing = grad_checkpointing
        self._dense, self._blocks = parse_out_features(out_features, self.tower.num_blocks)
        self._out_features = list(out_features)
        p = self.tower.patch_size
        self._out_feature_strides = {name: p for name in self._out_features}
        self._out_feature_channels = {
            name: self.tower.output_dim if name == "dense" else self.tower.width
            for name in self._out_features
        }
        if teacher and finetune != "frozen":
            raise ValueError(f"a teacher CLIP is frozen, not finetune {finetune!r}")
        self.is_teacher = teacher
        self.text_cache_dir = text_cache_dir
        self.text_embeddings_files = {
            str(k): str(v) for k, v in (text_embeddings_files or {}).items()
        }
        self._tokenizer = tokenizer
        self._text_embedder: TextEmbedder | None = None
        self._precomputed_files: dict[tuple, torch.Tensor] = {}
        self.initial_state: dict[str, torch.Tensor] = {}
        self.set_trainable(finetune, trainable_blocks)

    @classmethod
    def from_config(cls, cfg, input_shape=None):
        c = cfg.MODEL.CLIP
        return {
            "model_name": c.MODEL_NAME,
            "checkpoint": c.CHECKPOINT,
            "out_features": list(c.OUT_FEATURES),
            "finetune": c.FINETUNE,
            "trainable_blocks": c.TRAINABLE_BLOCKS,
            "grad_checkpointing": c.GRAD_CHECKPOINTING,
            "text_cache_dir": text_cache_dir(cfg),
            "text_embeddings_files": embeddings_files(
                c.TEXT_EMBEDDINGS, "MODEL.CLIP.TEXT_EMBEDDINGS"
            ),
            "checkpoint_role": "CLIP (MODEL.CLIP.CHECKPOINT)",
            # weights may come later (MODEL.WEIGHTS); the checkpointer checks that every CLIP has
            # some unless MODEL.CLIP.RANDOM_INIT
            "random_init": True,
        }

    # -- what the model is -------------------------------------------------------------------------
    @property
    def patch_size(self) -> int:
        return self.tower.patch_size

    @property
    def size_divisibility(self) -> int:
        return self.tower.patch_size

    @property
    def embed_dim(self) -> int:
        """Size of the projected (CLIP embedding) space: dense tokens, images, crops, text."""
        return self.tower.output_dim

    @property
    def vision_blocks(self) -> nn.ModuleList:
        module = self.tower.module
        return module.blocks if hasattr(module, "blocks") else module.transformer.resblocks

    @property
    def export_formats(self) -> tuple[str, ...]:
        """Checkpoint layouts this model can be written in (the EVA-CLIP release layout exists for
        EVA02 models only)."""
        if isinstance(self.tower, EvaTower):
            return (CheckpointFormat.EVA_CLIP.value, CheckpointFormat.OPEN_CLIP.value)
        return (CheckpointFormat.OPEN_CLIP.value,)

    # -- training state ----------------------------------------------------------------------------
    def set_trainable(self, finetune: str, num_blocks: int = 0) -> None:
        """Freeze the CLIP but what ``finetune`` trains (the class docstring; ``"blocks"``: the
        last ``num_blocks`` vision blocks, the published ``lock_image_tower``), and remember the
        trainable weights as the blend's initial state."""
        n = self.tower.num_blocks
        if finetune not in FINETUNE_MODES:
            raise ValueError(
                f"MODEL.CLIP.FINETUNE must be one of {FINETUNE_MODES}, got {finetune!r}"
            )
        if finetune == "blocks" and not 0 < num_blocks <= n:
            raise ValueError(
                f"MODEL.CLIP.FINETUNE 'blocks' trains the last MODEL.CLIP.TRAINABLE_BLOCKS vision "
                f"blocks: it must be in [1, {n}], got {num_blocks} (FINETUNE 'frozen' trains "
                "nothing)"
            )
        if finetune != "blocks" and num_blocks:
            raise ValueError(
                f"MODEL.CLIP.TRAINABLE_BLOCKS ({num_blocks}) is for MODEL.CLIP.FINETUNE 'blocks'; "
                f"set it to 0 with FINETUNE {finetune!r}"
            )
        self.model.requires_grad_(False)
        if finetune == "blocks":
            for block in self.vision_blocks[n - num_blocks :]:
                block.requires_grad_(True)
        elif finetune == "attention":
            for p in attention_qv_parameters(self.model):
                p.requires_grad_(True)
        elif finetune == "full":
            self.model.requires_grad_(True)
            if isinstance(getattr(self.model, "logit_scale", None), nn.Parameter):
                self.model.logit_scale.requires_grad_(False)
        # the value path gives no gradient to the last block's query/key projections; frozen, so
        # that DistributedDataParallel does not wait for them (and AdamW's weight decay leaves them
        # be, as for parameters without gradients in the published code)
        for p in self.tower.dense_unused_parameters():
            p.requires_grad_(False)
        self.finetune = finetune
        self.num_trainable_blocks = num_blocks
        visual = {id(p) for p in self.model.visual.parameters()}
        #: whether the text tower trains (text embeddings must then be computed with autograd)
        self.trains_text = any(
            p.requires_grad and id(p) not in visual for p in self.model.parameters()
        )
        self.reset_initial_state()

    @property
    def is_frozen(self) -> bool:
        """Whether no CLIP parameter trains (``forward`` then runs without autograd)."""
        return self.finetune == "frozen"

    def reset_initial_state(self) -> None:
        """Take the current trainable weights as the blend's initial state (done when the model is
        built, and when the checkpointer reads a raw CLIP file into it)."""
        self.initial_state = {
            name: p.detach().cpu().clone()
            for name, p in self.model.named_parameters()
            if p.requires_grad
        }

    @contextlib.contextmanager
    def blended(self, alpha: float) -> Iterator[CLIPViTBackbone]:
        """Inside the block the CLIP holds ``alpha * trained + (1 - alpha) * initial`` weights (the
        published weight-space blend), afterwards its trained weights again. A no-op when ``alpha``
        is 1 or nothing trains."""
        if alpha >= 1.0 or not self.initial_state:
            yield self
            return
        params = dict(self.model.named_parameters())
        trained = {k: params[k].detach().clone() for k in self.initial_state}
        with torch.no_grad():
            for k, v in blend_state_dicts(trained, self.initial_state, alpha).items():
                params[k].copy_(v)
        try:
            yield self
        finally:
            with torch.no_grad():
                for k, v in trained.items():
                    params[k].copy_(v)

    def train(self, mode: bool = True):
        super().train(mode)
        # frozen parts stay in eval mode (no dropout or drop path): all of CLIP when frozen, the
        # text tower when only vision blocks train
        if self.is_frozen:
            self.model.eval()
        elif self.finetune == "blocks":
            text = getattr(self.model, "text", None) or getattr(self.model, "transformer", None)
            text.eval()
        return self

    def frozen_copy(self) -> CLIPViTBackbone:
        """A frozen teacher with this CLIP's current weights (CLIPSelf's teacher)."""
        initial, self.initial_state = self.initial_state, {}  # not copied: a teacher has none
        try:
            teacher = copy.deepcopy(self)
        finally:
            self.initial_state = initial
        teacher._text_embedder = None
        teacher.set_trainable("frozen")
        teacher.is_teacher = True
        return teacher.eval()

    # -- features ----------------------------------------------------------------------------------
    def features(
        self,
        x: torch.Tensor,
        *,
        dense: bool = True,
        image: bool = False,
        blocks: Sequence[int] = (),
        dense_residual: str = "token",
        normalize: bool = True,
    ) -> TowerOutput:
        """One pass of the vision tower over normalised images (any size); what is asked for
        (:meth:`densevlm_d2.clip.towers.VisionTower.forward`). Autograd follows the caller's
        context."""
        return self.tower.forward(
            x,
            dense=dense,
            image=image,
            block_indices=blocks,
            dense_residual=dense_residual,
            normalize=normalize,
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad() if self.is_frozen else contextlib.nullcontext():
            out = self.features(x, dense=self._dense, blocks=self._blocks)
        feats = {f"block{i}": t for i, t in out.blocks.items()}
        if self._dense:
            feats["dense"] = out.dense
        return {name: feats[name] for name in self._out_features}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }

    def encode_crops(self, crops: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """(N, 3, h, w) normalised crops -> (N, D) L2-normalised float32 CLS embeddings, computed
        ``batch_size`` crops at a time."""
        device = next(self.model.parameters()).device
        out = [
            self.features(crops[i : i + batch_size].to(device), dense=False, image=True).image
            for i in range(0, len(crops), batch_size)
        ]
        if not out:
            return torch.zeros(0, self.embed_dim, device=device)
        return F.normalize(torch.cat(out).float(), dim=-1)

    # -- text --------------------------------------------------------------------------------------
    @property
    def text_embedder(self) -> TextEmbedder:
        """The text classifier on this CLIP's text tower (disk cache in ``text_cache_dir``)."""
        if self._text_embedder is None:
            self._text_embedder = TextEmbedder(
                self.model, self.model_name, self.text_cache_dir, tokenizer=self._tokenizer
            )
        return self._text_embedder

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Raw strings -> (N, D) L2-normalised text embeddings (no prompt templates)."""
        return self.text_embedder.encode_texts(texts)

    def _precomputed(self, vocabulary: Vocabulary, spec: TextSpec) -> torch.Tensor | None:
        path = self.text_embeddings_files.get(vocabulary.source)
        if path is None:
            return None
        if not spec.ensemble:
            raise ValueError(
                f"a precomputed embeddings file ({path}) holds one embedding per class; "
                f"{vocabulary.source}'s are asked for one per prompt template"
            )
        key = (path, vocabulary.names)  # read and checked once per file and vocabulary
        if key not in self._precomputed_files:
            emb = load_text_embeddings(path, vocabulary, self.embed_dim, self.model_name)
            self._precomputed_files[key] = emb
        return self._precomputed_files[key].clone()

    def text_embeddings(
        self,
        vocabulary: Vocabulary | Sequence[str],
        spec: TextSpec = DEFAULT_TEXT_SPEC,
        *,
        grad: bool = False,
    ) -> torch.Tensor:
        """The class embeddings of a vocabulary (or a list of names, validated as one): ``(K, D)``,
        or ``(K, P, D)`` when ``spec.ensemble`` is off; float32, on the CPU (with ``grad``: on the
        model's device, with autograd, uncached).

        The one route from class names to embeddings. When this CLIP has a precomputed file for
        the vocabulary (``text_embeddings_files[vocabulary.source]``) it is read (checked against
        the vocabulary and the model); otherwise the text tower computes them as ``spec`` says,
        through the memory and disk caches (:class:`~densevlm_d2.clip.text.TextEmbedder`).
        ``spec.synonyms`` "max" is for :meth:`text_queries`."""
        vocabulary = Vocabulary.from_names(vocabulary)
        if spec.synonyms == "max":
            raise ValueError("synonyms 'max' gives one embedding per synonym: use text_queries")
        precomputed = None if grad else self._precomputed(vocabulary, spec)
        if precomputed is not None:
            return precomputed
        return self.text_embedder(vocabulary, spec, grad=grad)

    def text_queries(
        self, vocabulary: Vocabulary | Sequence[str], spec: TextSpec = DEFAULT_TEXT_SPEC
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(Q, D)`` query embeddings and the class of each query (None: one query per class).
        With ``spec.synonyms`` "max", one query per synonym (unless a precomputed file gives one
        embedding per class); otherwise :meth:`text_embeddings`."""
        vocabulary = Vocabulary.from_names(vocabulary)
        if spec.synonyms != "max":
            return self.text_embeddings(vocabulary, spec), None
        precomputed = self._precomputed(vocabulary, spec)
        if precomputed is not None:
            return precomputed, None
        queries, owner = vocabulary.synonym_queries()
        emb = self.text_embedder(vocabulary, spec)
        return emb, (torch.tensor(owner) if len(queries) != len(vocabulary) else None)

    # -- weights -----------------------------------------------------------------------------------
    def save(
        self,
        path: str | os.PathLike,
        fmt: CheckpointFormat | str = "eva_clip",
        dtype: torch.dtype | None = None,
    ):
        """Write the CLIP in the EVA-CLIP release layout (EVA02 only) or open_clip's, atomically."""
        return save_checkpoint(self.model, path, fmt, dtype)


def get_clip_backbone(model: nn.Module) -> CLIPViTBackbone:
    """The student CLIP of a model: ``model`` itself if it is a :class:`CLIPViTBackbone`, else the
    one ``CLIPViTBackbone`` inside ``model.backbone`` (a DDP wrapper is looked through)."""
    if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
        model = model.module
    if isinstance(model, CLIPViTBackbone):
        return model
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise ValueError(f"{type(model).__name__} has no backbone that could hold a CLIP")
    found = [m for m in backbone.modules() if isinstance(m, CLIPViTBackbone)]
    if len(found) != 1:
        raise ValueError(
            f"{type(model).__name__}'s backbone holds {len(found)} CLIPViTBackbone modules; "
            "exactly one is its CLIP"
        )
    return found[0]


def text_cache_dir(cfg) -> str | None:
    """``MODEL.CLIP.TEXT_CACHE`` as a cache folder (None: no disk cache)."""
    cache = cfg.MODEL.CLIP.TEXT_CACHE
    return (cache.DIR or "default") if cache.ENABLED else None


def embeddings_files(pairs, key: str) -> dict[str, str]:
    """A ``TEXT_EMBEDDINGS`` config value (pairs of a vocabulary name and a ``.npy``) as a dict; a
    clear error naming ``key`` for anything else."""
    out = {}
    for pair in pairs:
        if (
            not isinstance(pair, list | tuple)
            or len(pair) != 2
            or not all(isinstance(v, str) and v for v in pair)
        ):
            raise ValueError(
                f"{key} holds [vocabulary name, .npy file] pairs, e.g. "
                f"[['densevlm_coco_panoptic_val', 'coco.npy']]; got {pair!r}"
            )
        if pair[0] in out:
            raise ValueError(f"{key} names the vocabulary {pair[0]!r} twice")
        out[pair[0]] = pair[1]
    return out
