"""tools/convert_checkpoint.py, run as users run it."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import densevlm_d2
from densevlm_d2.clip.checkpoint import CheckpointMismatchError, detect_format, read_state_dict

TOOL = Path(__file__).resolve().parents[2] / "tools" / "convert_checkpoint.py"


@pytest.mark.slow
def test_convert_release_to_open_clip_and_back(tiny_eva, tmp_path):
    src = densevlm_d2.save_checkpoint(tiny_eva, tmp_path / "release.pt", "eva_clip")
    wrapped = tmp_path / "wrapped.pt"  # as DenseVLM saves it
    torch.save(
        {"epoch": 6, "state_dict": {"module." + k: v for k, v in read_state_dict(src).items()}},
        wrapped,
    )
    oc = tmp_path / "open_clip.pt"
    run = subprocess.run(
        [
            sys.executable,
            str(TOOL),
            "--model",
            "EVA02-Tiny-16",
            "--input",
            str(wrapped),
            "--output",
            str(oc),
            "--to",
            "open_clip",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "eva_clip layout" in run.stdout and "open_clip layout" in run.stdout
    assert detect_format(read_state_dict(oc)).value == "open_clip"

    back = tmp_path / "back.pt"
    argv = sys.argv
    sys.argv = [
        str(TOOL),
        "--model",
        "EVA02-Tiny-16",
        "--input",
        str(oc),
        "--output",
        str(back),
        "--to",
        "eva_clip",
    ]
    try:
        runpy.run_path(str(TOOL), run_name="__main__")
    finally:
        sys.argv = argv
    original, converted = read_state_dict(src), read_state_dict(back)
    assert set(original) == set(converted)
    assert all(torch.equal(original[k], converted[k]) for k in original)


def test_wrong_model_is_reported(tiny_eva, tmp_path):
    src = densevlm_d2.save_checkpoint(tiny_eva, tmp_path / "release.pt", "eva_clip")
    namespace = runpy.run_path(str(TOOL))
    with pytest.raises(CheckpointMismatchError, match="non-EVA model"):
        namespace["main"](
            [
                "--model",
                "ViT-Tiny-16",
                "--input",
                str(src),
                "--output",
                str(tmp_path / "o.pt"),
                "--to",
                "open_clip",
            ]
        )
    assert not (tmp_path / "o.pt").exists()
