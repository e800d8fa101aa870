"""Atomic writes: a crash or a full disk never leaves half a file or a partial folder, and a full
disk is an error that says so and names the file."""

from __future__ import annotations

import errno
import io
import os

import pytest
import torch

from densevlm_d2.clip.checkpoint import atomic_save
from densevlm_d2.engine import CLIPCheckpointer
from densevlm_d2.utils import files
from densevlm_d2.utils.files import DiskFullError, atomic_folder, atomic_write, temporary_files


class _FullDisk(io.RawIOBase):
    """A file that accepts ``room`` bytes, then fails as a full disk does (ENOSPC)."""

    def __init__(self, real, room: int):
        self.real, self.room = real, room

    def writable(self):
        return True

    def write(self, b):
        if len(b) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(b)
        return self.real.write(b)

    def fileno(self):
        return self.real.fileno()

    def close(self):
        self.real.close()
        super().close()


@pytest.fixture
def full_disk(monkeypatch):
    real_open = files._open_temporary

    def open_full(path, binary):
        f, tmp = real_open(path, binary)
        return _FullDisk(f, room=100), tmp

    monkeypatch.setattr(files, "_open_temporary", open_full)


def test_atomic_write_replaces_whole_files(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    with atomic_write(target, binary=False) as f:
        f.write("one")
    with pytest.raises(RuntimeError, match="stop"), atomic_write(target, binary=False) as f:
        f.write("two, half written")
        raise RuntimeError("stop")
    assert target.read_text() == "one" and temporary_files(target.parent) == []
    mode = os.stat(target).st_mode & 0o777
    assert mode == 0o666 & ~files._umask()


def test_a_full_disk_during_a_checkpoint_save_says_so(tmp_path, full_disk):
    """(torch.save reported it as "RuntimeError: [enforce fail at inline_container.cc] unexpected
    pos", naming neither the path nor the cause.)"""
    path = tmp_path / "model_0000999.pth"
    with pytest.raises(DiskFullError, match=f"no space left on the device while writing {path}"):
        atomic_save({"w": torch.randn(10_000)}, path)
    assert not path.exists() and temporary_files(tmp_path) == []


def test_the_previous_checkpoint_is_kept(tmp_path, monkeypatch):
    checkpointer = CLIPCheckpointer(torch.nn.Linear(3, 2), str(tmp_path))
    checkpointer.save("model_0000001")
    before = (tmp_path / "model_0000001.pth").read_bytes()
    real_open = files._open_temporary

    def open_full(path, binary):
        f, tmp = real_open(path, binary)
        return _FullDisk(f, room=100), tmp

    monkeypatch.setattr(files, "_open_temporary", open_full)
    with pytest.raises(DiskFullError, match="model_0000001.pth .* the previous file is untouched"):
        checkpointer.save("model_0000001")
    assert (tmp_path / "model_0000001.pth").read_bytes() == before
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert temporary_files(tmp_path) == []


def test_atomic_folder(tmp_path):
    out = tmp_path / "labels"
    with atomic_folder(out) as tmp:
        (tmp / "a.png").write_text("a")
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]
    with pytest.raises(ValueError), atomic_folder(out) as tmp:
        (tmp / "b.png").write_text("b")
        raise ValueError("a bad raw file")
    assert sorted(p.name for p in out.iterdir()) == ["a.png"] and temporary_files(tmp_path) == []
    with atomic_folder(out) as tmp:  # a complete second run replaces the folder
        (tmp / "c.png").write_text("c")
    assert sorted(p.name for p in out.iterdir()) == ["c.png"] and temporary_files(tmp_path) == []
