"""CLIP checkpoint formats: strict loading, conversion and export.

Formats (``CheckpointFormat``):

``eva_clip``
    The EVA-CLIP release layout (``EVA02_CLIP_B_psz16_s8B.pt``) that the DenseVLM and CLIPSelf
    releases share: ``visual.*`` in EVA naming (``attn.q_proj/k_proj/v_proj.weight``,
    ``attn.q_bias``, ``attn.v_bias``, ``attn.inner_attn_ln``, SwiGLU ``mlp.w1/w2/w3``,
    ``mlp.ffn_ln``, RoPE buffers ``visual.rope.freqs_{cos,sin}`` and one copy per block under
    ``attn.rope``), ``text.*`` and ``logit_scale``. Fine-tuned releases may nest it under
    ``state_dict`` (DenseVLM/CLIPSelf save ``{"epoch", "name", "state_dict", "optimizer",
    "scaler"}``) and prefix keys with ``module.``.
``open_clip``
    Upstream open_clip's ``model.state_dict()``: ``visual.trunk.*`` (timm naming) for EVA02 models,
    ``visual.conv1`` ... for OpenAI-style ViTs.

Loading is strict: every tensor of the target model must come from the file, nothing may be left
over and every shape must match; otherwise :class:`CheckpointMismatchError` names the keys. RoPE
buffers in an ``eva_clip`` file are not model state (they are recomputed for the actual grid) but
are checked against the published formula.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from enum import Enum
from pathlib import Path

import torch
from torch import nn

from ..utils.files import atomic_write
from .hub import resolve_weights
from .io import WeightFileError, WeightFileNotFoundError, load_weight_file
from .towers import EvaTower, eva_rope_table, vision_tower

__all__ = [
    "CheckpointFormat",
    "CheckpointMismatchError",
    "architecture",
    "atomic_save",
    "blend_state_dicts",
    "convert_state_dict",
    "detect_format",
    "export_state_dict",
    "load_checkpoint",
    "read_state_dict",
    "save_checkpoint",
]

# Wrapper keys under which training scripts store the model's state dict.
_WRAPPER_KEYS = ("state_dict", "model", "module")
# Per-block renames between EVA-CLIP naming (left) and timm's Eva naming (right), applied to the key
# suffix after ``visual.blocks.N.``; everything else in the visual tower keeps its name under
# ``visual.trunk.``.
_EVA_TO_TIMM_BLOCK = (
    ("attn.q_bias", "attn.q_proj.bias"),
    ("attn.v_bias", "attn.v_proj.bias"),
    ("attn.inner_attn_ln.", "attn.norm."),
    ("mlp.ffn_ln.", "mlp.norm."),
    ("mlp.w1.", "mlp.fc1_g."),
    ("mlp.w2.", "mlp.fc1_x."),
    ("mlp.w3.", "mlp.fc2."),
)
_EVA_ROPE_KEY = re.compile(r"^visual\.(blocks\.\d+\.attn\.)?rope\.freqs_(cos|sin)$")
_BLOCK_KEY = re.compile(r"^(blocks\.\d+\.)(.*)$")
# Entries of OpenAI's original state dicts that are configuration, not weights.
_OPENAI_CONFIG_KEYS = ("input_resolution", "context_length", "vocab_size")


class CheckpointFormat(str, Enum):
    EVA_CLIP = "eva_clip"
    OPEN_CLIP = "open_clip"


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model: lists the missing, unexpected and mis-shaped keys."""

    def __init__(self, source: str, missing=(), unexpected=(), mismatched=(), detail: str = ""):
        self.missing, self.unexpected, self.mismatched = (
            list(missing),
            list(unexpected),
            list(mismatched),
        )
        parts = [f"{source} does not match the model"]
        if detail:
            parts.append(detail)
        if self.missing:
            parts.append(f"{len(self.missing)} missing key(s): {_preview(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected key(s): {_preview(self.unexpected)}")
        if self.mismatched:
            shown = [f"{k} (file {tuple(a)} vs model {tuple(b)})" for k, a, b in self.mismatched]
            parts.append(f"{len(self.mismatched)} shape mismatch(es): {_preview(shown)}")
        super().__init__("; ".join(parts))


def _preview(items: list[str], n: int = 8) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------
def read_state_dict(
    source: str | os.PathLike | Mapping, role: str = "CLIP checkpoint"
) -> dict[str, torch.Tensor]:
    """The tensor dict of a checkpoint file or loaded object, unwrapped from
    ``state_dict``/``model``/``module`` and stripped of a ``module.`` prefix
    (DistributedDataParallel). ``source`` may be a local file, an ``hf://`` reference or a
    model-zoo name (:mod:`densevlm_d2.clip.hub`). Files are read without unpickling code
    (:func:`~densevlm_d2.clip.io.load_weight_file`); a file that holds no state dict of tensors is
    a :class:`~densevlm_d2.clip.io.WeightFileError` naming ``role`` and the file."""
    if isinstance(source, Mapping):
        obj, path = source, "<state dict>"
    else:
        try:
            local = resolve_weights(source)
        except FileNotFoundError as e:
            raise WeightFileNotFoundError(role, source, str(e)) from None
        obj, path = load_weight_file(local, role), str(source)
    for key in _WRAPPER_KEYS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        empty = isinstance(obj, Mapping)
        found = f"{'an empty' if empty else 'a'} {type(obj).__name__}"
        raise WeightFileError(role, path, f"holds no state dict of tensors (found {found})")
    state = dict(obj)
    if all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    non_tensors = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if non_tensors:
        raise WeightFileError(
            role, path, f"holds entries that are not tensors: {_preview(non_tensors)}"
        )
    return state


def detect_format(
    state: Mapping[str, torch.Tensor], source: str = "<state dict>"
) -> CheckpointFormat:
    if any(k.startswith("visual.trunk.") for k in state) or "visual.conv1.weight" in state:
        return CheckpointFormat.OPEN_CLIP
    if "visual.patch_embed.proj.weight" in state:
        return CheckpointFormat.EVA_CLIP
    raise ValueError(
        f"{source}: unrecognised CLIP checkpoint layout: expected EVA-CLIP keys "
        "(visual.patch_embed.proj.weight) or open_clip keys (visual.trunk.* or "
        "visual.conv1.weight); "
        f"first keys: {_preview(sorted(state))}"
    )


# --------------------------------------------------------------------------------------------------
# EVA-CLIP <-> open_clip
# --------------------------------------------------------------------------------------------------
def _rename_block_key(key: str, table) -> str:
    m = _BLOCK_KEY.match(key)
    if not m:
        return key
    prefix, rest = m.groups()
    for src, dst in table:
        if rest.startswith(src):
            return prefix + dst + rest[len(src) :]
    return key


def _expected_rope(model: nn.Module) -> torch.Tensor | None:
    """The ``(N, head_dim)`` cos/sin pair the published code stores for the pretrained grid,
    stacked."""
    tower = vision_tower(model.visual)
    if not isinstance(tower, EvaTower) or tower.module.rope is None:
        return None
    table = eva_rope_table(
        tower.pretrained_grid, tower.head_dim, tower.rope_ref_len, tower.rope_theta
    )
    sin, cos = table.chunk(2, dim=-1)
    return torch.stack([cos, sin])


def _eva_keys_to_open_clip(
    state: Mapping[str, torch.Tensor], model: nn.Module
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """EVA-CLIP keys -> open_clip keys; RoPE buffers dropped after a check against the published
    formula for the model's pretrained grid (the ones that differ are returned)."""
    expected = _expected_rope(model)
    out, bad_rope = {}, []
    for key, value in state.items():
        m = _EVA_ROPE_KEY.match(key)
        if m:
            if expected is None:
                out[key] = value  # reported as unexpected by the strict check
                continue
            ref = expected[0 if m.group(2) == "cos" else 1]
            # files may store the buffers in half precision: compare at the file's precision
            tol = max(1e-5, 2 * torch.finfo(value.dtype).eps) if value.is_floating_point() else 0.0
            if value.shape != ref.shape or not torch.allclose(
                value.float(), ref.to(value.dtype).float(), atol=tol, rtol=0
            ):
                bad_rope.append(f"{key} {tuple(value.shape)}")
            continue
        if key.startswith("visual."):
            key = "visual.trunk." + _rename_block_key(key[len("visual.") :], _EVA_TO_TIMM_BLOCK)
        out[key] = value
    return out, bad_rope


def _rope_error(source: str, model: nn.Module, bad_rope: list[str]) -> CheckpointMismatchError:
    return CheckpointMismatchError(
        source,
        detail="RoPE buffers differ from the published formula for this model's pretrained "
        f"grid {vision_tower(model.visual).pretrained_grid}: {_preview(bad_rope)}",
    )


def eva_to_open_clip(
    state: Mapping[str, torch.Tensor], model: nn.Module, source: str = "<state dict>"
):
    """EVA-CLIP layout -> open_clip layout of ``model`` (an open_clip EVA02 model). RoPE buffers are
    checked against the published formula for the model's pretrained grid and dropped."""
    out, bad_rope = _eva_keys_to_open_clip(state, model)
    if bad_rope:
        raise _rope_error(source, model, bad_rope)
    return out


def open_clip_to_eva(
    state: Mapping[str, torch.Tensor], model: nn.Module
) -> dict[str, torch.Tensor]:
    """open_clip layout of an EVA02 ``model`` -> EVA-CLIP release layout, RoPE buffers included."""
    inverse = tuple((dst, src) for src, dst in _EVA_TO_TIMM_BLOCK)
    expected = _expected_rope(model)
    tower = vision_tower(model.visual)
    out: dict[str, torch.Tensor] = {}
    if "logit_scale" in state:
        out["logit_scale"] = state["logit_scale"]
    for key, value in state.items():
        if key.startswith("visual.trunk."):
            out["visual." + _rename_block_key(key[len("visual.trunk.") :], inverse)] = value
        elif key != "logit_scale":
            out[key] = value
    if expected is not None:
        dtype = state["visual.trunk.pos_embed"].dtype
        cos, sin = expected[0].to(dtype), expected[1].to(dtype)
        rope = {"visual.rope.freqs_cos": cos, "visual.rope.freqs_sin": sin}
        for i in range(tower.num_blocks):
            rope[f"visual.blocks.{i}.attn.rope.freqs_cos"] = cos.clone()
            rope[f"visual.blocks.{i}.attn.rope.freqs_sin"] = sin.clone()
        out.update(rope)
    return out


# --------------------------------------------------------------------------------------------------
# Strict loading
# --------------------------------------------------------------------------------------------------
_BLOCK_INDEX = re.compile(
    r"^(visual\.trunk\.blocks|visual\.transformer\.resblocks|text\.transformer\.resblocks"
    r"|transformer\.resblocks)\.(\d+)\."
)
_WIDTH_KEYS = {
    "vision width": ("visual.trunk.pos_embed", "visual.positional_embedding"),
    "text width": ("text.token_embedding.weight", "token_embedding.weight"),
    "embedding size": ("text.text_projection", "text_projection"),
}


def architecture(state: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Depths and widths that an open_clip-layout state dict reveals: vision/text blocks, vision
    and text width, embedding size."""
    arch: dict[str, int] = {}
    for key in state:
        m = _BLOCK_INDEX.match(key)
        if m:
            name = "vision blocks" if m.group(1).startswith("visual") else "text blocks"
            arch[name] = max(arch.get(name, 0), int(m.group(2)) + 1)
    for name, keys in _WIDTH_KEYS.items():
        key = next((k for k in keys if k in state), None)
        if key is not None:
            arch[name] = int(state[key].shape[-1])
    return arch


def convert_state_dict(
    state: Mapping[str, torch.Tensor], model: nn.Module, source: str = "CLIP checkpoint"
) -> dict[str, torch.Tensor]:
    """Any supported layout -> ``model``'s own (open_clip) layout, checked strictly against
    ``model``: the same architecture (depths and widths), every key, every shape, and floating-point
    tensors where the model has them."""
    fmt = detect_format(state, source)
    bad_rope: list[str] = []
    if fmt is CheckpointFormat.EVA_CLIP:
        if not isinstance(vision_tower(model.visual), EvaTower):
            raise CheckpointMismatchError(
                source, detail="an EVA-CLIP layout file cannot load into a non-EVA model"
            )
        state, bad_rope = _eva_keys_to_open_clip(state, model)
    else:
        state = {k: v for k, v in state.items() if k not in _OPENAI_CONFIG_KEYS}
    target = model.state_dict()
    file_arch, model_arch = architecture(state), architecture(target)
    differ = [
        f"{k} {file_arch[k]} (model {model_arch[k]})"
        for k in model_arch
        if k in file_arch and file_arch[k] != model_arch[k]
    ]
    if differ:
        raise CheckpointMismatchError(
            source,
            detail=f"the file holds another architecture: {', '.join(differ)}; is the model name "
            "right?",
        )
    if bad_rope:
        raise _rope_error(source, model, bad_rope)
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    mismatched = [
        (k, state[k].shape, target[k].shape)
        for k in target
        if k in state and state[k].shape != target[k].shape
    ]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(
            source, missing, unexpected, mismatched, detail=f"read as {fmt.value} layout"
        )
    not_float = [
        f"{k} ({state[k].dtype})"
        for k in target
        if target[k].is_floating_point() and not state[k].is_floating_point()
    ]
    if not_float:
        raise CheckpointMismatchError(
            source,
            detail=f"{len(not_float)} tensor(s) are not floating point where the model's are: "
            f"{_preview(not_float)}",
        )
    return {k: state[k] for k in target}


def load_checkpoint(
    model: nn.Module, source: str | os.PathLike | Mapping, role: str = "CLIP checkpoint"
) -> CheckpointFormat:
    """Strictly load a checkpoint of any supported layout into an open_clip ``model``; returns its
    format. Errors name ``role`` and the file."""
    name = f"{role} {source}" if not isinstance(source, Mapping) else f"{role} (a state dict)"
    state = read_state_dict(source, role)
    fmt = detect_format(state, name)
    model.load_state_dict(convert_state_dict(state, model, name), strict=True)
    return fmt


# --------------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------------
def export_state_dict(
    model: nn.Module, fmt: CheckpointFormat | str, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """``model``'s weights in the given layout (``eva_clip`` only for EVA02 models), detached, on
    the CPU."""
    fmt = CheckpointFormat(fmt)
    state = {
        k: v.detach().to("cpu", dtype=dtype if v.is_floating_point() and dtype else v.dtype).clone()
        for k, v in model.state_dict().items()
    }
    if fmt is CheckpointFormat.OPEN_CLIP:
        return state
    if not isinstance(vision_tower(model.visual), EvaTower):
        raise ValueError("the eva_clip layout exists only for EVA02 models")
    return open_clip_to_eva(state, model)


def atomic_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`~densevlm_d2.utils.atomic_write`: a crash never leaves half a
    file, and a full disk is an error that names the file."""
    path = Path(path)
    with atomic_write(path) as f:
        torch.save(obj, f)
    return path


def save_checkpoint(
    model: nn.Module,
    path: str | os.PathLike,
    fmt: CheckpointFormat | str,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``model`` as a plain state dict in the given layout (atomically)."""
    return atomic_save(export_state_dict(model, fmt, dtype), path)


def blend_state_dicts(
    trained: Mapping[str, torch.Tensor], initial: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """The published weight-space blend ``alpha * trained + (1 - alpha) * initial`` of two state
    dicts with the same keys; non-floating tensors are taken from ``trained``."""
    if set(trained) != set(initial):
        raise ValueError("cannot blend state dicts with different keys")
    out = {}
    for k, v in trained.items():
        if v.is_floating_point():
            out[k] = alpha * v + (1.0 - alpha) * initial[k].to(device=v.device, dtype=v.dtype)
        else:
            out[k] = v
    return out
