"""Reading weight files safely: nothing a user supplies is ever unpickled with code execution.

* ``.safetensors``: safetensors;
* ``.pkl`` / ``.pyth`` (detectron2's model-zoo files: dicts of numpy arrays): a restricted
  unpickler that admits only containers, numbers, strings and numpy arrays;
* anything else: ``torch.load(..., weights_only=True)``.

Every failure is a :class:`WeightFileError` whose message names the file, its role (e.g. "teacher
CLIP (MODEL.DENSEVLM.TEACHER.CHECKPOINT)") and what is wrong: missing, empty, truncated, not a
checkpoint, or holding objects that only code execution could build.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from pathlib import Path

import torch

__all__ = [
    "WeightFileError",
    "WeightFileNotFoundError",
    "load_weight_file",
    "restricted_pickle_load",
]


class WeightFileError(ValueError):
    """A weight file cannot be read; the message names the file, its role and the problem."""

    def __init__(self, role: str, path: str | os.PathLike, problem: str):
        self.role, self.path, self.problem = role, str(path), problem
        super().__init__(f"{role}: {path}: {problem}")


class WeightFileNotFoundError(WeightFileError, FileNotFoundError):
    """The weight file does not exist (also a ``FileNotFoundError``)."""


# What detectron2's model-zoo pickles (and numpy arrays in any pickle) are made of.
_SAFE_GLOBALS = {
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),  # bytes pickled by Python 2 / protocol 2 (a pure function)
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it refers to {module}.{name}, which is not allowed")


def restricted_pickle_load(f) -> object:
    """``pickle.load`` that builds only containers, numbers, strings and numpy arrays."""
    return _RestrictedUnpickler(f, encoding="latin1").load()


def load_weight_file(path: str | os.PathLike, role: str = "weight file") -> object:
    """The object stored in a weight file, read without executing anything it carries."""
    path = Path(path)
    if not path.exists():
        raise WeightFileNotFoundError(role, path, "file not found")
    if not path.is_file():
        raise WeightFileError(role, path, "not a file")
    if path.stat().st_size == 0:
        raise WeightFileError(role, path, "the file is empty (0 bytes)")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError) as e:
            raise WeightFileError(role, path, f"not a readable safetensors file ({e})") from None
    if path.suffix in (".pkl", ".pyth"):
        with open(path, "rb") as f:
            try:
                return restricted_pickle_load(f)
            except pickle.UnpicklingError as e:
                raise WeightFileError(
                    role,
                    path,
                    f"refused to unpickle: {e} (only containers, numbers, strings and numpy "
                    "arrays are read from .pkl files; convert other files to a state dict of "
                    "tensors saved with torch.save or safetensors)",
                ) from None
            except (EOFError, ValueError, TypeError, AttributeError, ImportError) as e:
                raise WeightFileError(role, path, f"not a readable pickle ({e!r})") from None
    return _torch_load(path, role)


def _start(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(12)


def _torch_load(path: Path, role: str) -> object:
    start = _start(path)
    if start.startswith(b"PK\x03\x04"):  # torch.save's zip archive, unreadable: damaged
        not_a_checkpoint = "the file is truncated or corrupted (a zip archive torch cannot read)"
    else:
        not_a_checkpoint = (
            f"not a PyTorch checkpoint (it starts with {start!r}; expected a file written by "
            "torch.save, a .safetensors file or a detectron2 .pkl)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        message = str(e)
        code = next((line for line in message.splitlines() if "GLOBAL" in line), None)
        if code is not None:
            raise WeightFileError(
                role,
                path,
                "holds objects that only running code could build, so it was not loaded "
                f"(torch.load with weights_only=True: {code.strip()})",
            ) from None
        raise WeightFileError(role, path, not_a_checkpoint) from None
    except (EOFError, IndexError, struct.error):
        raise WeightFileError(
            role, path, "the file is truncated (unexpected end of file)"
        ) from None
    except (RuntimeError, zipfile.BadZipFile, io.UnsupportedOperation) as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "zip archive" in message or "central directory" in message:
            raise WeightFileError(
                role, path, f"the file is truncated or corrupted ({message.split('. ')[0]})"
            ) from None
        raise WeightFileError(role, path, f"cannot be read by torch.load ({message})") from None
    except (KeyError, ValueError, TypeError, AttributeError, OSError):
        raise WeightFileError(role, path, not_a_checkpoint) from None
