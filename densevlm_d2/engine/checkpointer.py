"""detectron2 checkpointing that also reads raw CLIP checkpoints, strictly and safely.

``MODEL.WEIGHTS`` may name a detectron2 checkpoint of a densevlm_d2 model (``model_final.pth``) or a
raw CLIP checkpoint in any layout :mod:`densevlm_d2.clip.checkpoint` reads (EVA-CLIP release,
DenseVLM/CLIPSelf release, open_clip). A raw CLIP file is converted, checked strictly against the
model's CLIP (:func:`~densevlm_d2.modeling.get_clip_backbone`) and loaded into it; the rest of the
model keeps its weights, and a trainable CLIP takes the loaded weights as the initial state of the
weight blend. A detectron2 checkpoint must match the model exactly: missing, unexpected or
mis-shaped keys raise :class:`CheckpointMismatchError`. Frozen teachers
(``CLIPViTBackbone(teacher=True)``) are neither saved nor expected: they are rebuilt from their own
files when the model is built.

Safety: no file is unpickled with code execution (detectron2's ``.pkl`` model-zoo files go through a
restricted unpickler, everything else through ``torch.load(weights_only=True)`` or safetensors);
errors name the file and its role (``MODEL.WEIGHTS``, the resumed checkpoint). A checkpoint is never
written with non-finite weights or optimiser state, files are written atomically and follow the
umask, and temporary files left by a killed save are removed when the next run starts.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils import comm

from ..clip.checkpoint import (
    CheckpointMismatchError,
    atomic_save,
    convert_state_dict,
    detect_format,
    read_state_dict,
)
from ..clip.hub import resolve_weights
from ..clip.io import WeightFileError, WeightFileNotFoundError, load_weight_file
from ..modeling import CLIPViTBackbone, get_clip_backbone
from ..utils.files import atomic_write, temporary_files

__all__ = ["CLIPCheckpointer"]

_RAW_CLIP = "densevlm_d2:raw-clip"


def _raw_clip_state(obj) -> dict | None:
    """The CLIP state dict if ``obj`` is a raw CLIP checkpoint, else None."""
    try:
        state = read_state_dict(obj)
        detect_format(state)
    except (ValueError, TypeError):
        return None
    return state


def _non_finite(tensors: Mapping[str, object], prefix: str = "") -> list[str]:
    """Names of the floating-point tensors in a (nested) state dict that hold NaN or inf."""
    bad = []
    for key, value in tensors.items():
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and not torch.isfinite(value).all():
                bad.append(name)
        elif isinstance(value, Mapping):
            bad += _non_finite(value, f"{name}.")
        elif isinstance(value, list | tuple):
            bad += _non_finite(dict(enumerate(value)), f"{name}.")
    return bad


class CLIPCheckpointer(DetectionCheckpointer):
    """``allow_random_clip``: whether :meth:`resume_or_load` may leave a CLIP of the model without
    weights (``MODEL.CLIP.RANDOM_INIT``); otherwise it names the CLIP and the key that gives it
    weights."""

    def __init__(
        self,
        model,
        save_dir: str = "",
        *,
        strict: bool = True,
        allow_random_clip: bool = True,
        **kwargs,
    ):
        super().__init__(model, save_dir, **kwargs)
        self.strict = strict
        self.allow_random_clip = allow_random_clip
        self._role = "model weights (MODEL.WEIGHTS)"
        self._loading: str | None = None
        if save_dir and comm.is_main_process():
            for tmp in temporary_files(save_dir):
                self.logger.warning("removing %s, left by a save that was killed", tmp)
                if tmp.is_dir():
                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    tmp.unlink(missing_ok=True)

    def _student(self) -> tuple[str, CLIPViTBackbone]:
        """The model's CLIP and the prefix of its open_clip model's keys in the state dict."""
        backbone = get_clip_backbone(self.model)
        name = next(n for n, m in self.model.named_modules() if m is backbone)
        return f"{name}.model." if name else "model.", backbone

    @property
    def _excluded(self) -> tuple[str, ...]:
        """State-dict prefixes of the frozen teachers."""
        return tuple(
            f"{name}."
            for name, m in self.model.named_modules()
            if isinstance(m, CLIPViTBackbone) and m.is_teacher
        )

    def last_checkpoint(self) -> str | None:
        """The file ``last_checkpoint`` names (only ever a checkpoint with finite weights)."""
        return self.get_checkpoint_file() if self.save_dir and self.has_checkpoint() else None

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        excluded = self._excluded
        data = {
            "model": {
                k: v for k, v in self.model.state_dict().items() if not k.startswith(excluded)
            }
        }
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        bad = _non_finite(data)
        if bad:
            last = self.last_checkpoint()
            raise FloatingPointError(
                f"not writing checkpoint {name}: {len(bad)} tensor(s) hold NaN or inf "
                f"(e.g. {', '.join(bad[:3])}); training diverged at or before iteration "
                f"{data.get('iteration', '?')}. "
                + (
                    f"The last checkpoint, {last}, is finite: resume from it with --resume, "
                    "e.g. with a lower SOLVER.BASE_LR."
                    if last
                    else "No checkpoint was written before."
                )
            )
        path = os.path.join(self.save_dir, f"{name}.pth")
        self.logger.info("Saving checkpoint to %s", path)
        atomic_save(data, path)
        self.tag_last_checkpoint(os.path.basename(path))

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        with atomic_write(path, binary=False) as f:
            f.write(last_filename_basename)

    # -- loading --------------------------------------------------------------------------------
    def resume_or_load(self, path: str, *, resume: bool = True):
        """detectron2's, with errors that name the file's role, and a check that every CLIP of the
        model has weights unless ``allow_random_clip``."""
        resuming = resume and self.has_checkpoint()
        self._role = (
            f"checkpoint to resume ({os.path.join(self.save_dir, 'last_checkpoint')})"
            if resuming
            else "model weights (MODEL.WEIGHTS)"
        )
        ret = super().resume_or_load(path, resume=resume)
        if not self.allow_random_clip:
            self._check_clips_have_weights()
        return ret

    def load(self, path: str, *args, **kwargs):
        if path:  # a local file, an hf:// reference or a model-zoo name
            try:
                path = str(resolve_weights(path))
            except FileNotFoundError as e:
                raise WeightFileNotFoundError(self._role, path, str(e)) from None
        if path and not os.path.isfile(path):
            local = self.path_manager.get_local_path(path)
            if not os.path.isfile(local):
                raise WeightFileNotFoundError(self._role, path, "file not found")
        self._loading = path
        return super().load(path, *args, **kwargs)

    def _check_clips_have_weights(self) -> None:
        random = [
            (name or "the model", m)
            for name, m in self.model.named_modules()
            if isinstance(m, CLIPViTBackbone) and m.weights_source is None
        ]
        if not random:
            return
        where = "; ".join(
            f"{name} (a teacher: MODEL.DENSEVLM.TEACHER.CHECKPOINT, or for CLIPSelf the student's "
            "MODEL.CLIP.CHECKPOINT)"
            if m.is_teacher
            else f"{name} (MODEL.CLIP.CHECKPOINT, or a CLIP or model file as MODEL.WEIGHTS)"
            for name, m in random
        )
        raise ValueError(
            f"{len(random)} CLIP model(s) have no weights, so results would be those of random "
            f"weights: {where}. Give them weights, or set MODEL.CLIP.RANDOM_INIT True to run "
            "with random weights on purpose (tests, smoke runs, speed measurements)."
        )

    def _load_file(self, filename: str):
        loaded = load_weight_file(filename, self._role)
        if filename.endswith(".pkl"):
            return _detectron2_pickle(loaded, filename, self._role)
        if filename.endswith(".pyth"):  # pycls, as detectron2 reads it
            if not isinstance(loaded, Mapping) or "model_state" not in loaded:
                raise WeightFileError(self._role, filename, "a .pyth file without 'model_state'")
            state = {
                k: v
                for k, v in loaded["model_state"].items()
                if not k.endswith("num_batches_tracked")
            }
            return {"model": state, "__author__": "pycls", "matching_heuristics": True}
        state = _raw_clip_state(loaded)
        if state is not None:
            prefix, student = self._student()
            converted = convert_state_dict(state, student.model, f"{self._role} {filename}")
            self.logger.info(
                "Read a %s-layout CLIP checkpoint into %s*", detect_format(state).value, prefix
            )
            return {
                "model": {prefix + k: v for k, v in converted.items()},
                "__author__": _RAW_CLIP,
                "matching_heuristics": False,
            }
        model = loaded.get("model", loaded) if isinstance(loaded, Mapping) else None
        if not isinstance(model, Mapping) or not all(
            isinstance(v, torch.Tensor) for v in model.values()
        ):
            raise WeightFileError(
                self._role,
                filename,
                "neither a detectron2 checkpoint (a 'model' state dict of tensors) nor a CLIP "
                "checkpoint",
            )
        return dict(loaded) if "model" in loaded else {"model": dict(loaded)}

    def _load_model(self, checkpoint):
        raw_clip = checkpoint.get("__author__") == _RAW_CLIP
        source = f"{self._role} {self._loading}"
        if not raw_clip:
            target = self.model.state_dict()
            not_float = [
                f"{k} ({v.dtype})"
                for k, v in checkpoint["model"].items()
                if isinstance(v, torch.Tensor)
                and k in target
                and target[k].is_floating_point()
                and not v.is_floating_point()
            ]
            if not_float:
                raise CheckpointMismatchError(
                    source,
                    detail=f"tensors that are not floating point where the model's are: "
                    f"{', '.join(not_float[:8])}",
                )
        incompatible = super()._load_model(checkpoint)
        excluded = self._excluded
        if raw_clip:  # the CLIP part was checked strictly in _load_file; the rest keeps its weights
            incompatible.missing_keys.clear()
            student = self._student()[1]
            student.reset_initial_state()
            student.weights_source = str(self._loading)
        else:  # frozen teachers are rebuilt from their own checkpoints
            incompatible.missing_keys[:] = [
                k for k in incompatible.missing_keys if not k.startswith(excluded)
            ]
            for m in self.model.modules():
                if isinstance(m, CLIPViTBackbone) and not m.is_teacher:
                    m.weights_source = str(self._loading)
        problems = (
            incompatible.missing_keys
            or incompatible.unexpected_keys
            or incompatible.incorrect_shapes
        )
        if not raw_clip and self.strict and problems:
            raise CheckpointMismatchError(
                source,
                incompatible.missing_keys,
                incompatible.unexpected_keys,
                incompatible.incorrect_shapes,
                detail="read as a detectron2 checkpoint",
            )
        return incompatible


def _detectron2_pickle(data, filename: str, role: str) -> dict:
    """A detectron2 model-zoo ``.pkl`` (read by the restricted unpickler), arranged as detectron2's
    own ``_load_file`` arranges it."""
    if not isinstance(data, Mapping):
        raise WeightFileError(role, filename, f"holds a {type(data).__name__}, not a dict")
    if "model" in data and "__author__" in data:  # detectron2 model zoo
        return dict(data)
    if "blobs" in data:  # Caffe2 / Detectron1 detection models
        data = data["blobs"]
    data = {k: v for k, v in data.items() if not str(k).endswith("_momentum")}
    return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}
