"""tools/measure_checkpointing.py at a tiny size: checkpointing keeps fewer bytes for every part it
covers, and a frozen CLIP stored in half precision changes results exactly as the published AMP
does (float16), no more."""

from __future__ import annotations

import pytest

import demo.register  # noqa: F401  (the demo's model EVA02-Demo-16, as --register would)
from tests.helpers import ROOT, load_tool


@pytest.fixture(scope="module")
def tool():
    return load_tool("measure_checkpointing")


@pytest.mark.slow
def test_memory_saved_for_every_checkpointed_part(tool, tmp_path):
    result = tool.main(
        ["--out", str(tmp_path / "m.json"), "memory"]
        + ["--region-config", str(ROOT / "configs/demo/densevlm.yaml")]
        + ["--cat-seg-config", str(ROOT / "configs/demo/cat_seg.yaml")]
        + ["--fvit-config", str(ROOT / "configs/ovlvis/tiny_cpu.yaml")]
        + ["--classes", "8", "--rois", "64"]
    )
    assert (tmp_path / "m.json").is_file()
    checkpointed = {k: v for k, v in result.items() if "on" in v}
    assert len(checkpointed) == 7, sorted(result)
    for part, mib in checkpointed.items():
        assert 0 < mib["on"] < mib["off"], (part, mib)
    assert result["clip blocks"]["on"] < 0.2 * result["clip blocks"]["off"]


def test_half_precision_differs_from_float32_as_amp_does(tool):
    result = tool.main(
        ["precision", "--student", "EVA02-Tiny-16"]
        + ["--teacher", "EVA02-Demo-16", "--size", "64", "--classes", "12"]
    )
    assert result["stored float16 equals amp float16"]
    for name in ("teacher region features", "teacher region logits", "fvit backbone features"):
        diff = result[name]
        assert diff["stored float16"] == diff["amp float16"], (name, diff)
        assert 0 < diff["amp float16"] < diff["amp bfloat16"] < 0.05, (name, diff)
    loss = result["densevlm loss"]
    assert loss["stored float16"] == loss["amp float16"] and loss["float32 value"] > 0
