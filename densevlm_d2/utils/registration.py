"""The ``--register FILE.py`` option of the command-line tools: Python files that register a user's
datasets, vocabularies or models, run before the config is read (in every process)."""

from __future__ import annotations

import argparse
import runpy
from collections.abc import Sequence
from pathlib import Path

__all__ = ["add_register_argument", "run_register_files"]


def add_register_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--register",
        action="append",
        default=[],
        metavar="FILE.py",
        help="a Python file that registers datasets, vocabularies or models first (repeatable; "
        "docs/own_data.md)",
    )


def run_register_files(paths: Sequence[str]) -> None:
    """Run each file (a missing one is an error naming it)."""
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--register: no such file: {path}")
        runpy.run_path(str(path), run_name="__densevlm_register__")
