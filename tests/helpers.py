"""Shared by tests that run the project's command-line tools as users do, in a subprocess."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
#: registers the CPU demo's datasets and model (``--register`` of the tools)
DEMO_REGISTER = ROOT / "demo" / "register.py"


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
