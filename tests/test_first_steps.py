"""A newcomer's first steps (issue 21): a detector built for inference without its training files
and fed an ordinary photo, the demo world read where ``make demo`` writes it, the cheap checks of a
run before any model is built, every dataset of ``check_dataset.py`` reported, ``predict.py``'s
image checked first, a CLIP without weights announced, ``eval_sem_seg.py --help`` as it behaves,
and the tools' ``--help`` printed as written without fvcore's warnings."""

from __future__ import annotations

import ast
import inspect
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.engine import default_argument_parser
from detectron2.modeling import build_backbone

import demo.register  # noqa: F401  (the demo's model EVA02-Demo-16)
import densevlm_d2
from densevlm_d2.clip.io import WeightFileNotFoundError
from densevlm_d2.data.datasets.ov_coco import register_ov_coco_instances
from densevlm_d2.data.datasets.panoptic import DatasetLayoutError
from densevlm_d2.data.mappers import build_detection_mapper
from densevlm_d2.engine import Trainer
from densevlm_d2.modeling import CLIPViTBackbone
from tests.helpers import ROOT, load_tool, run_tool

PHOTO = ROOT / "densevlm_d2" / "assets" / "chelsea.jpg"  # 451 x 300: larger than the demo canvas


def _fvit_cfg(*opts):
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.merge_from_file(str(ROOT / "configs" / "demo" / "fvit.yaml"))
    cfg.merge_from_list(list(opts))
    return cfg


@pytest.mark.slow
def test_detector_built_for_inference_without_its_training_files(tmp_path):
    name = "test_first_steps_absent_det"
    if name not in DatasetCatalog.list():  # a dataset whose classes are only in its (absent) json
        register_ov_coco_instances(name, str(tmp_path / "no.json"), str(tmp_path / "no"), ())
    cfg = _fvit_cfg("DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", "()",
                    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0")  # fmt: skip
    model = Trainer.build_model(cfg).eval()  # reads no dataset
    inputs = build_detection_mapper(cfg, is_train=False)({"file_name": str(PHOTO)})
    # the test loader's resize: the long side to INPUT.LSJ.IMAGE_SIZE, within MODEL.FVIT.PAD_TO
    assert tuple(inputs["image"].shape) == (3, 106, 160)
    assert (inputs["height"], inputs["width"]) == (300, 451)
    with torch.no_grad(), pytest.raises(RuntimeError, match="no vocabulary: call densevlm_d2.set_"):
        model([inputs])
    densevlm_d2.set_vocabulary(model, ["cat", "blanket", "wall"])
    with torch.no_grad():
        instances = model([inputs])[0]["instances"]
    assert instances.image_size == (300, 451) and len(instances) > 0  # the photo's own pixels
    boxes = instances.pred_boxes.tensor
    assert boxes[:, 2].max() > 160 and boxes[:, 2].max() <= 451 and boxes[:, 3].max() <= 300
    # training reads its data before building anything: the missing json is the error
    with pytest.raises(DatasetLayoutError, match="instances json not found"):
        Trainer(cfg)


@pytest.mark.slow
def test_demo_world_is_read_where_make_demo_writes_it():
    import demo.__main__ as demo_main
    from demo.register import DEMO_DATASETS

    assert '"--demo-dir", default="output/demo"' in inspect.getsource(demo_main.main)
    assert DEMO_DATASETS == os.path.join("output/demo", "datasets")  # pipeline: <demo-dir>/datasets
    env = {k: v for k, v in os.environ.items() if k != "DETECTRON2_DATASETS"}
    env["PYTHONPATH"] = str(ROOT)
    code = (
        "import demo.register\nfrom detectron2.data import DatasetCatalog, MetadataCatalog\n"
        "print(MetadataCatalog.get('densevlm_demo_world_val').image_root)\n"
        "DatasetCatalog.get('densevlm_demo_world_val')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.stdout.splitlines()[0] == os.path.join(DEMO_DATASETS, "demo_world", "val")
    if not (ROOT / DEMO_DATASETS / "demo_world" / "panoptic_val.json").exists():
        # the error points at where make demo writes the world, and how to point elsewhere
        assert "written by make demo into output/demo/datasets/demo_world" in proc.stderr
        assert "DETECTRON2_DATASETS=D/datasets" in proc.stderr


def _train_net(tmp_path, config, *opts, eval_only=False):
    argv = ["--config-file", str(ROOT / "configs" / config)] + (
        ["--eval-only"] if eval_only else []
    )
    args = default_argument_parser().parse_args(argv + ["OUTPUT_DIR", str(tmp_path), *opts])
    return load_tool("train_net").main(args)


@pytest.fixture
def no_model(monkeypatch):
    """Any model building (and so any text embedding) fails the test."""

    def refuse(cls, cfg):
        raise AssertionError("a model was built before the cheap checks")

    monkeypatch.setattr(Trainer, "build_model", classmethod(refuse))


def test_cheap_checks_come_before_any_model(tmp_path, no_model, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the built-in datasets' files (under ./datasets) are not here
    tiny = "coco/tiny_densevlm_cpu.yaml"
    # no weights for either CLIP (the config's comment and training.md say what it needs)
    with pytest.raises(ValueError, match=r"2 CLIP model\(s\) would have no weights.*TEACHER.*"
                       r"RANDOM_INIT True"):  # fmt: skip
        _train_net(tmp_path, tiny)
    # a weight file that is not there, named with its key; a near miss of a zoo name
    with pytest.raises(WeightFileNotFoundError, match=r"CLIP \(MODEL.CLIP.CHECKPOINT\): .*no.pt"):
        _train_net(tmp_path, tiny, "MODEL.CLIP.CHECKPOINT", str(tmp_path / "no.pt"),
                   "MODEL.CLIP.RANDOM_INIT", "True")  # fmt: skip
    with pytest.raises(WeightFileNotFoundError, match="did you mean 'densevlm-teacher-eva02-l14"):
        _train_net(tmp_path, tiny, "MODEL.DENSEVLM.TEACHER.CHECKPOINT",
                   "densevlm-teacher-eva02-l14", "MODEL.CLIP.RANDOM_INIT", "True")  # fmt: skip
    # URLs of detectron2's path handlers are left to them
    with pytest.raises(ValueError, match="would have no weights.*TEACHER"):
        _train_net(tmp_path, tiny, "MODEL.WEIGHTS", "detectron2://ImageNetPretrained/x.pkl")
    # the evaluation data (used at the end of training too), then the training data
    with pytest.raises(DatasetLayoutError, match="panoptic json not found"):
        _train_net(tmp_path, tiny, "MODEL.CLIP.RANDOM_INIT", "True")
    with pytest.raises(DatasetLayoutError, match="image dir not found: .*coco/train2017"):
        _train_net(tmp_path, tiny, "MODEL.CLIP.RANDOM_INIT", "True", "DATASETS.TEST", "()")
    with pytest.raises(DatasetLayoutError, match="panoptic json not found"):
        _train_net(tmp_path, "eval/coco_panoptic_eva02_b16.yaml", "MODEL.WEIGHTS",
                   "zoo://eva02-clip-b16", eval_only=True)  # fmt: skip
    # eval_sem_seg.py: no weights is refused before the model, as its --help says
    tool = load_tool("eval_sem_seg")
    help_text = tool.argument_parser().format_help()
    assert "random weights only with the override MODEL.CLIP.RANDOM_INIT True" in " ".join(
        help_text.split()
    )
    args = tool.argument_parser().parse_args(["--clip", "eva02_b16", "--output-dir", str(tmp_path)])
    with pytest.raises(ValueError, match=r"would have no weights.* --weights\)"):
        tool.main(args)


def test_check_dataset_reports_every_dataset(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the built-in datasets' files are not here
    names = ["densevlm_coco_panoptic_val", "densevlm_ade20k_panoptic_val"]
    assert load_tool("check_dataset").main([*names, "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "densevlm_coco_panoptic_val: cannot be loaded: panoptic json not found" in out
    assert "densevlm_ade20k_panoptic_val: cannot be loaded: panoptic json not found" in out
    assert "2 of 2 dataset(s) failed" in out


def test_predict_checks_the_image_and_names_first(tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was built before the image was opened")

    from densevlm_d2.predictor import OpenVocabPredictor

    monkeypatch.setattr(OpenVocabPredictor, "from_config", refuse)
    tool = load_tool("predict")
    for argv, message in (
        (["--image", str(tmp_path / "street.jpg")], "cannot decode the image .*street.jpg"),
        (["--model", "EVA02-Tiny-61"], "unknown model; did you mean EVA02-Tiny-16"),
    ):
        with pytest.raises(SystemExit):
            tool.main(["--random-init", *argv])
        assert re.search(message, capsys.readouterr().err)
    with pytest.raises(SystemExit):
        tool.main(["--model", "EVA02-Tiny-16", "--checkpoint", "densevlm-eva02-b61"])
    assert "did you mean 'densevlm-eva02-b16'" in capsys.readouterr().err


def test_a_clip_without_weights_is_announced(tmp_path):
    with pytest.warns(UserWarning, match=r"CLIPViTBackbone\('EVA02-Tiny-16'\) has no checkpoint"):
        CLIPViTBackbone(model_name="EVA02-Tiny-16", text_cache_dir=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # on purpose, or weights that the checkpointer checks
        CLIPViTBackbone(model_name="EVA02-Tiny-16", text_cache_dir=None, random_init=True)
        cfg = densevlm_d2.add_densevlm_config(get_cfg())
        cfg.merge_from_file(str(ROOT / "configs" / "Base-CLIP-ViT.yaml"))
        cfg.MODEL.CLIP.MODEL_NAME = "EVA02-Tiny-16"
        build_backbone(cfg)


def _docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text()), clean=False) or ""


def test_tool_help_prints_examples_as_written():
    """A backslash-continued example line of a tool's docstring stays two lines (a raw docstring
    shown by a raw-description formatter)."""
    for tool in sorted((ROOT / "tools").glob("*.py")):
        source = tool.read_text()
        doc_source = source[source.index('"""') : source.index('"""', source.index('"""') + 3)]
        if "\\\n" in doc_source:
            assert "\\\n" in _docstring(tool), f"{tool.name}: the docstring joins its example lines"


@pytest.mark.slow
def test_tools_help_as_written_and_without_fvcore_warnings():
    for name in ("train_net", "eval_sem_seg", "convert_checkpoint", "predict", "check_dataset"):
        proc = run_tool(name, "--help")
        assert "FutureWarning" not in proc.stderr, proc.stderr
        continued = [line for line in _docstring(ROOT / "tools" / f"{name}.py").splitlines()
                     if line.endswith("\\")]  # fmt: skip
        assert all(line in proc.stdout.splitlines() for line in continued), (name, proc.stdout)
        assert name != "train_net" or continued  # its examples are shown too
