"""The documented path, as written, for a newcomer (issue 21): every fenced command (```bash) and
Python snippet (```python) of README.md and docs/*.md runs, in a fresh folder laid out like the
repository (its tools, configs, demo and datasets folders), with ``python`` and ``.venv/bin/python``
being this interpreter, no network (``HF_HUB_OFFLINE=1``) and no ``DETECTRON2_DATASETS`` unless
the snippet's stand-ins set it.

A snippet that cannot run here is in :data:`SKIP` with the reason (COCO, a GPU, several minutes, a
file only the user has). Some run on small stand-ins (:data:`STAND_INS`): a hub cache holding
random weights in the published files' exact layouts, a small demo world where ``make demo``
writes it, a few JPEGs as COCO's train2017. Both tables are checked against the docs: an entry
that no longer matches a snippet fails, so neither can go stale; a new snippet is run unless it
is added to one of them. A block's other languages (yaml, json, folder trees) are not commands.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT

DOCS = ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]
PHOTO = ROOT / "densevlm_d2" / "assets" / "chelsea.jpg"
#: what a snippet may read from the repository (the rest of its folder is its own)
LINKED = ("tools", "configs", "demo", "densevlm_d2", "datasets", "app", "docs")


@dataclass(frozen=True)
class Snippet:
    file: str  # relative to the repository
    line: int  # of the opening fence
    kind: str  # "bash": one command (continuation lines joined); "python": the whole block
    text: str

    def __str__(self) -> str:
        first = self.text.strip().splitlines()[0]
        return f"{self.file}:{self.line} [{self.kind}] {first[:90]}"


def snippets() -> list[Snippet]:
    found = []
    for file in DOCS:
        text = (ROOT / file).read_text()
        for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S):
            line = text.count("\n", 0, m.start()) + 1
            if m.group(1) == "python":
                found.append(Snippet(file, line, "python", m.group(2)))
            elif m.group(1) == "bash":
                joined = re.sub(r"\\\n\s*", " ", m.group(2))
                for command in joined.splitlines():
                    if command.strip() and not command.strip().startswith("#"):
                        found.append(Snippet(file, line, "bash", command.strip()))
    return found


_COCO = "needs COCO 2017 (not on this machine)"
_GPUS = "the published recipe: several GPUs and COCO, hours"
_B16 = (
    "a second full-size EVA02-CLIP-B/16 run (about 30 s on 2 cores): beyond this test's time "
    "budget; the README's snippet runs load_clip by model-zoo name from the same stand-in hub cache"
)
_OWN = "needs your own data (my_datasets.py); tests/tools/test_own_data.py follows the page"
_GPU = "needs a CUDA GPU; tests/cuda and tools/gpu_check.sh run there"
_LVIS = "needs LVIS v1 and COCO 2017 (not on this machine); tests/detection/test_ov_lvis.py runs it"

_FULL_SIZE = (
    "full-size models (several GiB, minutes on a CPU); tests/tools/test_measure_checkpointing.py "
    "runs the tool with tiny ones"
)

#: (doc, a text the snippet contains, why it does not run here)
SKIP: list[tuple[str, str, str]] = [
    (
        "docs/training.md",
        "tools/measure_checkpointing.py memory --methods densevlm fvit",
        _FULL_SIZE,
    ),  # fmt: skip
    ("README.md", "make demo", "20 minutes; tests/demo runs a reduced make demo"),
    ("README.md", "make test", "the test suite itself"),
    ("README.md", "configs/eval/coco_panoptic_eva02_b16.yaml --eval-only", _COCO),
    ("README.md", "configs/coco/densevlm_eva02_b16.yaml --num-gpus 4", _GPUS),
    ("README.md", "configs/ovcoco/fvit_eva02_b16.yaml --num-gpus 8", _GPUS),
    (
        "README.md",
        "tools/eval_sem_seg.py --clip eva02_b16",
        "needs the nine segmentation benchmarks",
    ),
    ("README.md", "configs/cat_seg/eva02_b16_densevlm.yaml --num-gpus 4", _GPUS),
    (
        "README.md",
        "configs/cat_seg/eva02_b16_densevlm.yaml --eval-only",
        "needs a CAT-Seg trained for 80k GPU iterations and the benchmarks",
    ),  # fmt: skip
    ("docs/api.md", "clip.preprocess_masks(binary_masks)", _B16 + "; binary_masks are the user's"),
    (
        "docs/api.md",
        "tools/predict.py --model EVA02-CLIP-B-16",
        _B16 + "; tests/test_visualization.py runs tools/predict.py with a tiny model",
    ),  # fmt: skip
    (
        "docs/api.md",
        'cfg.MODEL.CLIP.CHECKPOINT = "EVA02_CLIP_B_psz16_s8B.pt"',
        "needs EVA02_CLIP_B_psz16_s8B.pt, a file the user downloads",
    ),  # fmt: skip
    ("docs/api.md", "tools/convert_checkpoint.py --model EVA02-CLIP-B-16", _B16),
    ("docs/cat_seg.md", "tools/train_net.py", _GPUS),
    (
        "docs/cat_seg.md",
        "model.segment(image",
        "needs a trained CAT-Seg (model_final.pth) and the user's image array",
    ),  # fmt: skip
    ("docs/detection.md", "datasets/prepare_ov_coco.py", _COCO),
    ("docs/detection.md", "configs/ovcoco/fvit_eva02_b16.yaml --num-gpus 8", _GPUS),
    ("docs/detection.md", "configs/ovcoco/fvit_eva02_l14.yaml --num-gpus 8", _GPUS),
    ("docs/detection.md", "configs/ovcoco/fvit_eva02_b16.yaml --eval-only", _COCO),
    ("docs/evaluation.md", "tools/train_net.py", _COCO + " or ADE20K"),
    ("docs/ov_lvis.md", "datasets/prepare_ov_lvis.py", _LVIS + " on small LVIS-format files"),
    ("docs/ov_lvis.md", "tools/check_dataset.py", _LVIS + "'s check on small files"),
    ("docs/ov_lvis.md", "--num-gpus 8", _GPUS.replace("COCO", "LVIS")),
    ("docs/ov_lvis.md", "--eval-only", _LVIS + " with the tiny config"),
    ("docs/ov_lvis.md", "configs/ovlvis/tiny_cpu.yaml --register", _LVIS + " on small files"),
    ("docs/ov_lvis.md", "tools/benchmark_detector.py", "speed measurements, minutes each"),
    ("docs/gpu.md", "make wheelhouse", "builds a wheelhouse: downloads from PyPI"),
    ("docs/gpu.md", "tools/wheelhouse.py install", "installs into a prefix on a GPU node"),
    ("docs/gpu.md", "export PYTHONPATH=$HOME/densevlm_d2-prefix", "the install's prefix (above)"),
    ("docs/gpu.md", "tools/benchmark_gpu.py", _GPU),
    ("docs/gpu.md", "gpu_check.sh", _GPU),
    ("docs/install.md", "make env", "builds the virtual environment"),
    ("docs/install.md", "make lint", "builds the virtual environment first (CI runs ruff)"),
    ("docs/measurements.md", "tools/benchmark_", "speed measurements, minutes each"),
    ("docs/model_zoo.md", "configs/coco/densevlm_eva02_b16.yaml", _GPUS),
    ("docs/model_zoo.md", "tools/convert_checkpoint.py --model EVA02-CLIP-B-16", _B16),
    (
        "docs/model_zoo.md",
        'pretrained="densevlm_b16_open_clip.pt"',
        "reads the converter's output (the command above, not run)",
    ),  # fmt: skip
    ("docs/students.md", "configs/coco/densevlm_siglip2_b16.yaml --num-gpus 4", _GPUS),
    ("docs/own_data.md", "my_datasets.py", _OWN),
    ("docs/own_data.md", "register_sem_seg(", _OWN),
    ("docs/own_data.md", "output/my_densevlm/clip_final_eva_clip.pt", _OWN),
    ("docs/segmentation.md", "tools/", "needs the segmentation benchmarks"),
    ("docs/segmentation.md", 'checkpoint="zoo://densevlm-eva02-b16"', _B16),
    ("docs/training.md", "--num-gpus 4", _GPUS),
    ("docs/vocabularies.md", 'load_clip("densevlm-eva02-b16")', _B16),
    (
        "README.md",
        "tools/predict.py --model EVA02-CLIP-B-16",
        _B16 + "; tests/test_visualization.py runs tools/predict.py with a tiny model",
    ),  # fmt: skip
    ("docs/app.md", "make demo", "20 minutes; tests/demo runs a reduced make demo"),
    (
        "docs/app.md",
        "make app",
        "serves until stopped; tests/app/test_browser.py starts it and drives it in Chromium",
    ),  # fmt: skip
    (
        "docs/app.md",
        "OpenVocabPredictor.from_config(",
        _B16 + "; tests/test_predictor.py makes the same calls on small models",
    ),  # fmt: skip
]


# -- stand-ins ------------------------------------------------------------------------------------
@dataclass
class StandIn:
    """Files a snippet needs, made small: ``setup(folder, hub)`` writes them and returns the
    environment it adds; a snippet may get ``replace`` pairs (each old text must be in the
    snippet) and a Python one a ``prelude``."""

    setup: Callable[[Path, Path], dict]
    prelude: str = ""
    replace: tuple[tuple[str, str], ...] = ()


def _photo(folder: Path, name: str) -> None:
    shutil.copy(PHOTO, folder / name)


def _street(folder: Path, hub: Path) -> dict:
    _photo(folder, "street.jpg")
    return {}


def _nothing(folder: Path, hub: Path) -> dict:
    return {}


def _demo_world(folder: Path, hub: Path) -> dict:
    """A small world and a random demo CLIP where ``make demo`` writes them
    (``output/demo/datasets/demo_world``, ``output/demo/models/densevlm.pt``); no
    DETECTRON2_DATASETS, as after ``make demo``."""
    import densevlm_d2
    from demo.world import WorldSpec, write_world

    world = folder / "output" / "demo" / "datasets" / "demo_world"
    write_world(str(world), WorldSpec(seed=2, num_train=8, num_val=4), progress=False)
    models = folder / "output" / "demo" / "models"
    models.mkdir(parents=True)
    torch.manual_seed(0)
    clip = densevlm_d2.build_clip_model("EVA02-Demo-16")
    densevlm_d2.save_checkpoint(clip, models / "densevlm.pt", "eva_clip")
    return {}


def _coco_images(folder: Path, hub: Path) -> dict:
    images = folder / "data" / "coco" / "train2017"
    images.mkdir(parents=True)
    for i in range(2):
        _photo(images, f"{i:012d}.jpg")
    return {"DETECTRON2_DATASETS": str(folder / "data")}


def _my_run(folder: Path, hub: Path) -> dict:
    """A training run of the user's (the demo's DenseVLM metrics) where the snippet reads it."""
    run = folder / "output" / "my_densevlm_run"
    run.mkdir(parents=True)
    shutil.copy(ROOT / "docs" / "curves" / "demo_densevlm.metrics.json", run / "metrics.json")
    return {}


def _fvit_weights(folder: Path, hub: Path) -> dict:
    """A demo-size F-ViT's detectron2 checkpoint where the snippet loads one, and a photo."""
    from detectron2.config import get_cfg

    import demo.register  # noqa: F401  (EVA02-Demo-16)
    import densevlm_d2
    from densevlm_d2.engine import Trainer

    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.merge_from_file(str(ROOT / "configs" / "demo" / "fvit.yaml"))
    out = folder / "output" / "fvit_densevlm"
    out.mkdir(parents=True)
    torch.save({"model": Trainer.build_model(cfg).state_dict()}, out / "model_final.pth")
    _photo(folder, "photo.jpg")
    return {}


#: (doc, a text the snippet contains, its stand-ins)
STAND_INS: list[tuple[str, str, StandIn]] = [
    # the README's Python snippets, whatever they compute (its region snippet is being
    # rewritten): the zoo's B/16 files in the hub cache, and street.jpg
    ("README.md", "import ", StandIn(_street)),
    ("docs/model_zoo.md", "python -m densevlm_d2.model_zoo", StandIn(_nothing)),
    ("docs/demo.md", "import demo.register", StandIn(_demo_world)),
    # the demo's F-ViT on the world where make demo writes it: 2 of its 20 iterations (time)
    (
        "docs/detection.md",
        "configs/demo/fvit.yaml --register demo/register.py",
        StandIn(_demo_world, replace=(("demo/register.py", "demo/register.py SOLVER.MAX_ITER 2"),)),
    ),
    ("docs/training.md", "configs/coco/tiny_densevlm_cpu.yaml", StandIn(_coco_images)),
    ("docs/training.md", "tools/plot_curves.py mine=output/my_densevlm_run", StandIn(_my_run)),
    # the OV-COCO detector of the snippet, at the demo's size (the same code, a small model)
    (
        "docs/detection.md",
        "densevlm_d2.set_vocabulary(model",
        StandIn(
            _fvit_weights,
            prelude="import demo.register  # the stand-in: the demo's EVA02-Demo-16\n",
            replace=(("configs/ovcoco/fvit_eva02_b16.yaml", "configs/demo/fvit.yaml"),),
        ),
    ),  # fmt: skip
]


def _matches(table, snippet: Snippet):
    return [entry for entry in table if entry[0] == snippet.file and entry[1] in snippet.text]


def test_the_tables_match_the_docs():
    """Every SKIP and STAND_INS entry names a snippet that exists (neither table can go stale), no
    snippet is in both, and every stand-in replacement applies."""
    all_snippets = snippets()
    assert {s.file for s in all_snippets} >= {"README.md", "docs/detection.md", "docs/training.md"}
    for table in (SKIP, STAND_INS):
        for entry in table:
            hits = [s for s in all_snippets if s.file == entry[0] and entry[1] in s.text]
            assert hits, f"stale entry {entry[:2]}: no snippet of {entry[0]} contains {entry[1]!r}"
    for s in all_snippets:
        assert not (_matches(SKIP, s) and _matches(STAND_INS, s)), f"{s}: skipped and stood in"
        for _, _, stand_in in _matches(STAND_INS, s):
            for old, _new in stand_in.replace:
                assert old in s.text, f"{s}: the stand-in replaces {old!r}, which is not there"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A hub cache, offline, holding the model zoo's EVA02-CLIP-B/16 files (random weights in the
    exact release layout, as huggingface_hub lays files out)."""
    from densevlm_d2.clip.hub import MODEL_ZOO
    from tests.conftest import random_release_state
    from tests.helpers import put_in_hub_cache

    cache = tmp_path_factory.mktemp("hub")
    weights = tmp_path_factory.mktemp("weights") / "b16.pt"
    torch.save({k: v.half() for k, v in random_release_state("EVA02-CLIP-B-16").items()}, weights)
    for name in ("eva02-clip-b16", "densevlm-eva02-b16"):
        file = MODEL_ZOO[name].files[0]
        put_in_hub_cache(cache, file.repo_id, file.filename, weights)
    weights.unlink()
    yield cache
    shutil.rmtree(cache)  # 600 MB: not left behind in pytest's kept folders


def _folder(tmp_path: Path) -> Path:
    """A folder laid out like the repository, with ``python`` and ``.venv/bin/python``."""
    folder = tmp_path / "newcomer"
    folder.mkdir()
    for name in LINKED:
        (folder / name).symlink_to(ROOT / name)
    for bin_dir in (folder / "bin", folder / ".venv" / "bin"):
        bin_dir.mkdir(parents=True)
        wrapper = bin_dir / "python"
        wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return folder


def _runnable() -> list[Snippet]:
    return [s for s in snippets() if not _matches(SKIP, s)]


@pytest.mark.slow
@pytest.mark.parametrize("snippet", _runnable(), ids=str)
def test_documented_snippet_runs(snippet, hub, tmp_path):
    folder = _folder(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "DETECTRON2_DATASETS"}
    env.update(
        PATH=f"{folder / 'bin'}{os.pathsep}{os.environ['PATH']}",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        HF_HUB_OFFLINE="1",
        HF_HUB_CACHE=str(hub),
        MPLBACKEND="Agg",
    )
    text = snippet.text
    for _, _, stand_in in _matches(STAND_INS, snippet):
        env.update(stand_in.setup(folder, hub))
        for old, new in stand_in.replace:
            text = text.replace(old, new)
        text = stand_in.prelude + text
    if snippet.kind == "python":
        (folder / "snippet.py").write_text(text)
        cmd = [sys.executable, "snippet.py"]
    else:
        cmd = ["bash", "-c", text]
    proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{snippet}\n{text}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
