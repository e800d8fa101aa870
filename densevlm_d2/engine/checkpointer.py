"""detectron2 checkpointing that also reads raw CLIP checkpoints, strictly.

``MODEL.WEIGHTS`` may name a detectron2 checkpoint of a densevlm_d2 model (``model_final.pth``) or a
raw CLIP checkpoint in any layout :mod:`densevlm_d2.clip.checkpoint` reads (EVA-CLIP release,
DenseVLM/CLIPSelf release, open_clip). A raw CLIP file is converted, checked strictly against the
model's CLIP (:func:`~densevlm_d2.modeling.get_clip_backbone`) and loaded into it; the rest of the
model keeps its weights, and a trainable CLIP takes the loaded weights as the initial state of the
weight blend. A detectron2 checkpoint must match the model exactly: missing, unexpected or
mis-shaped keys raise :class:`CheckpointMismatchError`. Frozen teachers
(``CLIPViTBackbone(teacher=True)``) are neither saved nor expected: they are rebuilt from their own
files when the model is built.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..clip.checkpoint import (
    CheckpointMismatchError,
    atomic_save,
    convert_state_dict,
    detect_format,
    read_state_dict,
)
from ..modeling import CLIPViTBackbone, get_clip_backbone

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


class CLIPCheckpointer(DetectionCheckpointer):
    def __init__(self, model, save_dir: str = "", *, strict: bool = True, **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.strict = strict

    def _student(self) -> tuple[str, CLIPViTBackbone]:
        """The model's CLIP and the prefix of its open_clip model's keys in the state dict."""
        clip = get_clip_backbone(self.model)
        name = next(n for n, m in self.model.named_modules() if m is clip)
        return f"{name}.clip." if name else "clip.", clip

    @property
    def _excluded(self) -> tuple[str, ...]:
        """State-dict prefixes of the frozen teachers."""
        return tuple(
            f"{name}."
            for name, m in self.model.named_modules()
            if isinstance(m, CLIPViTBackbone) and m.is_teacher
        )

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
        path = os.path.join(self.save_dir, f"{name}.pth")
        self.logger.info("Saving checkpoint to %s", path)
        atomic_save(data, path)
        self.tag_last_checkpoint(os.path.basename(path))

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(last_filename_basename)
        os.replace(tmp, path)

    def _load_file(self, filename: str):
        if filename.endswith((".pkl", ".pyth")):
            return super()._load_file(filename)
        if filename.endswith(".safetensors"):
            loaded = read_state_dict(filename)
        else:
            loaded = torch.load(filename, map_location="cpu", weights_only=True)
        state = _raw_clip_state(loaded)
        if state is not None:
            prefix, student = self._student()
            converted = convert_state_dict(state, student.clip, source=filename)
            self.logger.info(
                "Read a %s-layout CLIP checkpoint into %s*", detect_format(state).value, prefix
            )
            return {
                "model": {prefix + k: v for k, v in converted.items()},
                "__author__": _RAW_CLIP,
                "matching_heuristics": False,
            }
        if not isinstance(loaded, Mapping):
            raise ValueError(f"{filename} is neither a detectron2 nor a CLIP checkpoint")
        return dict(loaded) if "model" in loaded else {"model": dict(loaded)}

    def _load_model(self, checkpoint):
        raw_clip = checkpoint.get("__author__") == _RAW_CLIP
        incompatible = super()._load_model(checkpoint)
        excluded = self._excluded
        if raw_clip:  # the CLIP part was checked strictly in _load_file; the rest keeps its weights
            incompatible.missing_keys.clear()
            self._student()[1].reset_initial_state()
        else:  # frozen teachers are rebuilt from their own checkpoints
            incompatible.missing_keys[:] = [
                k for k in incompatible.missing_keys if not k.startswith(excluded)
            ]
        problems = (
            incompatible.missing_keys
            or incompatible.unexpected_keys
            or incompatible.incorrect_shapes
        )
        if not raw_clip and self.strict and problems:
            raise CheckpointMismatchError(
                "(MODEL.WEIGHTS)",
                incompatible.missing_keys,
                incompatible.unexpected_keys,
                incompatible.incorrect_shapes,
                detail="read as a detectron2 checkpoint",
            )
        return incompatible
