"""Shared by tests that run the project's command-line tools as users do, in a subprocess, and by
tests that read weights from a Hugging Face hub cache."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
#: registers the CPU demo's datasets and model (``--register`` of the tools)
DEMO_REGISTER = ROOT / "demo" / "register.py"


def coco_train_photos(root: Path, count: int) -> Path:
    """``root/coco/train2017/`` holding ``count`` copies of a real photo under COCO file names (the
    training data of ``configs/coco/tiny_densevlm_cpu.yaml``); returns ``root``."""
    images = root / "coco" / "train2017"
    images.mkdir(parents=True)
    photo = (ROOT / "densevlm_d2" / "assets" / "chelsea.jpg").read_bytes()
    for i in range(count):
        (images / f"{i:012d}.jpg").write_bytes(photo)
    return root


def run_tool(
    name: str,
    *args: str,
    datasets: str | Path | None = None,
    timeout: int = 600,
    check: bool = True,
    **env,
) -> subprocess.CompletedProcess:
    """``tools/<name>.py *args`` as a user runs it, with ``DETECTRON2_DATASETS=datasets`` and the
    checkout on ``PYTHONPATH`` (extended, never replaced); other ``env`` entries are set too. With
    ``check``, fails the test with the end of the output when it does not exit 0."""
    extra = {"DETECTRON2_DATASETS": str(datasets)} if datasets is not None else {}
    environ = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        **extra,
        **env,
    )
    cmd = [sys.executable, str(ROOT / "tools" / f"{name}.py"), *(str(a) for a in args)]
    proc = subprocess.run(cmd, env=environ, capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def train_net(
    config: str | Path, *opts: str, register: tuple = (), **kwargs
) -> subprocess.CompletedProcess:
    """``tools/train_net.py --config-file config [--register r ...] *opts`` through
    :func:`run_tool` (same keyword arguments)."""
    flags = [arg for path in register for arg in ("--register", str(path))]
    return run_tool("train_net", "--config-file", str(config), *flags, *opts, **kwargs)


def load_tool(name: str) -> ModuleType:
    """``tools/<name>.py`` imported as a module (the tools folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: the commit that :func:`put_in_hub_cache` files its snapshots under
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def put_in_hub_cache(cache: Path, repo_id: str, filename: str, source: Path, commit=COMMIT):
    """A file in huggingface_hub's cache layout: ``models--org--repo/blobs/<sha256>``, a
    ``snapshots/<commit>/<filename>`` symlink to the blob, ``refs/main`` naming the commit."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    data = source.read_bytes()
    blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    link = repo / "snapshots" / commit / filename
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.exists() or link.is_symlink():
        link.unlink()
    link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return link
