"""Weight files are read without running anything they carry; every failure names the file, its
role and the problem."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import densevlm_d2
from densevlm_d2.clip.checkpoint import CheckpointMismatchError, read_state_dict
from densevlm_d2.clip.io import WeightFileError, load_weight_file


class Payload:
    """Unpickling this creates the marker file: the proof that code ran."""

    marker = ""

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def write_crafted(path, marker, layout="pickle"):
    """A file whose unpickling would run code (``os.mkdir(marker)``), in a plain pickle or inside a
    torch zip archive next to real tensors."""
    Payload.marker = str(marker)
    obj = {"model": {"w": torch.ones(2)}, "x": Payload()}
    if layout == "zip":
        torch.save(obj, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(obj, f)
    return path


@pytest.mark.parametrize(
    "name,layout", [("evil.pkl", "pickle"), ("evil.pth", "pickle"), ("evil.pt", "zip")]
)
def test_crafted_pickles_run_nothing(tmp_path, name, layout):
    marker = tmp_path / "RAN"
    path = write_crafted(tmp_path / name, marker, layout)
    with pytest.raises(WeightFileError, match=f"my role: {path}") as e:
        load_weight_file(path, "my role")
    assert not marker.exists()
    if layout == "zip":
        assert "holds objects that only running code could build" in str(e.value)
        assert "posix.mkdir" in str(e.value)
    elif name.endswith(".pkl"):
        assert "refused to unpickle: it refers to " in str(e.value)


def test_detectron2_model_zoo_pickles_still_load(tmp_path):
    """What detectron2's model-zoo .pkl files hold (numpy arrays in dicts, protocol 2) is read."""
    data = {
        "model": {"backbone.w": np.arange(6, dtype=np.float32).reshape(2, 3)},
        "__author__": "Detectron2 Model Zoo",
        "matching_heuristics": True,
    }
    with open(tmp_path / "zoo.pkl", "wb") as f:
        pickle.dump(data, f, protocol=2)
    loaded = load_weight_file(tmp_path / "zoo.pkl")
    assert loaded["__author__"] == data["__author__"]
    assert np.array_equal(loaded["model"]["backbone.w"], data["model"]["backbone.w"])


def test_each_kind_of_bad_file_is_named(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"a": torch.ones(1000)}, good)
    cases = {
        "missing.pt": (None, "file not found"),
        "empty.pt": (b"", "the file is empty"),
        "truncated.pt": (good.read_bytes()[:3000], "truncated or corrupted"),
        "nearly_whole.pt": (good.read_bytes()[:-20], "truncated or corrupted"),
        "text.pt": (b"not a checkpoint at all\n", "not a PyTorch checkpoint (it starts with"),
        "bad.safetensors": (b"\x10\x00\x00", "not a readable safetensors file"),
        "legacy_truncated.pt": (None, "truncated (unexpected end of file)"),
    }
    legacy = tmp_path / "legacy.pt"
    torch.save({"a": torch.ones(10)}, legacy, _use_new_zipfile_serialization=False)
    for name, (content, message) in cases.items():
        path = tmp_path / name
        if name == "legacy_truncated.pt":
            path.write_bytes(legacy.read_bytes()[:200])
        elif content is not None:
            path.write_bytes(content)
        with pytest.raises(WeightFileError) as e:
            load_weight_file(path, "teacher CLIP (MODEL.DENSEVLM.TEACHER.CHECKPOINT)")
        text = str(e.value)
        assert text.startswith(f"teacher CLIP (MODEL.DENSEVLM.TEACHER.CHECKPOINT): {path}")
        assert message in text, text
    with pytest.raises(FileNotFoundError):  # a missing file is also a FileNotFoundError
        load_weight_file(tmp_path / "missing.pt")


def test_files_that_are_not_state_dicts(tmp_path):
    torch.save(torch.ones(3), tmp_path / "tensor.pt")
    torch.save({"state_dict": {}}, tmp_path / "empty_dict.pt")
    torch.save({"a": torch.ones(1), "epoch": 3}, tmp_path / "mixed.pt")
    with pytest.raises(WeightFileError, match="holds no state dict of tensors .found a Tensor"):
        read_state_dict(tmp_path / "tensor.pt", "student")
    with pytest.raises(WeightFileError, match="found an empty dict"):
        read_state_dict(tmp_path / "empty_dict.pt", "student")
    with pytest.raises(WeightFileError, match="student: .*mixed.pt: holds entries that are not"):
        read_state_dict(tmp_path / "mixed.pt", "student")


def test_integer_tensors_where_the_model_has_floats(tiny_eva, tmp_path):
    state = densevlm_d2.export_state_dict(tiny_eva, "open_clip")
    state["visual.trunk.blocks.0.mlp.fc2.weight"] = state[
        "visual.trunk.blocks.0.mlp.fc2.weight"
    ].to(torch.int32)
    state["text.ln_final.weight"] = state["text.ln_final.weight"] > 0
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "ints.safetensors")
    with pytest.raises(CheckpointMismatchError) as e:
        densevlm_d2.load_checkpoint(
            densevlm_d2.build_clip_model("EVA02-Tiny-16"), tmp_path / "ints.safetensors"
        )
    assert "2 tensor(s) are not floating point" in str(e.value)
    assert "visual.trunk.blocks.0.mlp.fc2.weight (torch.int32)" in str(e.value)
    assert "text.ln_final.weight (torch.bool)" in str(e.value)
