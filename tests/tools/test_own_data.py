"""docs/own_data.md, step by step: the registration file is taken from the page itself; the commands
are the page's, with tiny models instead of EVA02-CLIP-B/16 and L/14."""

from __future__ import annotations

import json
import re
import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import densevlm_d2
from tests.helpers import run_tool
from tests.synthetic import write_panoptic_split

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "own_data.md"
CATEGORIES = [  # no colours: optional in your own json
    {"id": 1, "name": "tent", "isthing": 1},
    {"id": 2, "name": "kite", "isthing": 1},
    {"id": 7, "name": "sand", "isthing": 0},
    {"id": 9, "name": "sky", "isthing": 0},
    {"id": 11, "name": "grass", "isthing": 0},
]
# what the tiny models change in the page's commands
TINY = ["MODEL.DEVICE", "cpu", "MODEL.CLIP.MODEL_NAME", "EVA02-Tiny-16", "INPUT.REGIONS.IMAGE_SIZE",
        "64", "DATALOADER.NUM_WORKERS", "0", "TEST.REGIONS.IMS_PER_BATCH", "2"]  # fmt: skip


def _page_block(start: str, language: str = "python|bash") -> str:
    blocks = re.findall(rf"```(?:{language})\n(.*?)```", PAGE.read_text(), flags=re.S)
    return next(b for b in blocks if b.lstrip().startswith(start))


def _page_command(start: str) -> list[str]:
    """The page's command (continuation lines joined), split as a shell would, after the script."""
    import shlex

    line = _page_block(start).replace("\\\n", " ")
    return shlex.split(line)[2:]  # drop "python tools/..."


@pytest.mark.slow
def test_own_data_page(tmp_path, tiny_eva, monkeypatch):
    data = tmp_path / "my_data"
    colored = [dict(c, color=[40 * c["id"], 90, 160]) for c in CATEGORIES]
    paths = [str(data / "val"), str(data / "panoptic_val"), str(data / "panoptic_val.json")]
    write_panoptic_split(*paths, colored, num_images=4, seed=5)
    content = json.loads((data / "panoptic_val.json").read_text())
    content["categories"] = CATEGORIES
    (data / "panoptic_val.json").write_text(json.dumps(content))
    (data / "train").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        arr = rng.integers(0, 255, (60 + 8 * i, 80, 3), dtype=np.uint8)
        Image.fromarray(arr).save(data / "train" / f"img_{i}.{'png' if i % 2 else 'jpg'}")
    # the page's class-list file: the json's classes and their thing/stuff flags
    vocabulary = json.loads(_page_block("{", "json"))
    assert vocabulary["classes"] == [c["name"] for c in CATEGORIES]
    assert vocabulary["is_thing"] == [bool(c["isthing"]) for c in CATEGORIES]
    (data / "vocabulary.json").write_text(json.dumps(vocabulary))
    register = tmp_path / "my_datasets.py"
    register.write_text(_page_block("# my_datasets.py"))
    weights = densevlm_d2.save_checkpoint(tiny_eva, tmp_path / "tiny.pt", "eva_clip")
    env = {"MY_DATA": str(data)}
    monkeypatch.chdir(tmp_path)  # the page's relative paths (my_datasets.py, output/...)

    # 2. check the datasets
    check = run_tool("check_dataset", *_page_command("python tools/check_dataset.py"),
                     timeout=300, **env)  # fmt: skip
    assert "my_panoptic_val: 4 images" in check.stdout and "0 problem(s)" in check.stdout
    assert "my_train_images: 4 images" in check.stdout

    # 3. train
    train = _page_command(
        "python tools/train_net.py --register my_datasets.py --config-file configs/coco"
    )
    train[train.index("--config-file") + 1] = str(ROOT / "configs/coco/densevlm_eva02_b16.yaml")
    train += TINY + [
        "MODEL.CLIP.CHECKPOINT", str(weights), "MODEL.DENSEVLM.TEACHER.CHECKPOINT", str(weights),
        "MODEL.DENSEVLM.TEACHER.MODEL_NAME", "EVA02-Tiny-16", "MODEL.CLIP.TRAINABLE_BLOCKS", "2",
        "SOLVER.AMP.ENABLED", "False",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "3", "SOLVER.WARMUP_ITERS", "1",
    ]  # fmt: skip
    run_tool("train_net", *train, timeout=900, **env)
    out = tmp_path / "output" / "my_densevlm"
    assert (out / "clip_final_eva_clip.pt").exists() and (out / "clip_final_open_clip.pt").exists()
    during = json.loads((out / "inference/my_panoptic_val/region_macc.json").read_text())
    assert during["num_images"] == 4

    # 4. evaluate the exported student
    evaluate = _page_command(
        "python tools/train_net.py --register my_datasets.py --config-file configs/eval"
    )
    evaluate[evaluate.index("--config-file") + 1] = str(
        ROOT / "configs/eval/coco_panoptic_eva02_b16.yaml"
    )
    run_tool("train_net", *evaluate, *TINY, timeout=900, **env)
    result = json.loads(
        (
            tmp_path / "output/my_densevlm_eval/inference/my_panoptic_val/region_macc.json"
        ).read_text()
    )
    assert result["num_images"] == 4 and result["metrics"]["maskpool.thing.macc1"] is not None
    assert {row["class"] for row in result["per_class"]} <= {c["name"] for c in CATEGORIES}

    # 5. any vocabulary at run time, from the exported file
    ns = {}
    exec(_page_block("import densevlm_d2").replace("EVA02-CLIP-B-16", "EVA02-Tiny-16"), ns)
    assert ns["classes"].shape == (4, 64)
    shutil.rmtree(tmp_path / "output")
    runpy.run_path(str(register))  # the registration file runs twice without complaint
    # what every model and evaluator reads (section 2): the class-list file's names and flags
    vocabulary = densevlm_d2.dataset_vocabulary("my_vocabulary")
    assert vocabulary.names == ("tent", "kite", "sand", "sky", "grass")
    assert vocabulary.is_thing == (True, True, False, False, False)
    assert densevlm_d2.dataset_vocabulary("my_panoptic_val").names == vocabulary.names
