"""Every configs/cat_seg file: registered datasets, a known CLIP, the published recipe; the three
full-size models build with the shapes of their CLIPs (random weights)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

import demo.register  # noqa: F401  (the demo's model and datasets, for configs/demo/cat_seg.yaml)
import densevlm_d2
from densevlm_d2.clip.models import available_models
from densevlm_d2.clip.towers import DENSE_RESIDUALS

ROOT = Path(__file__).resolve().parents[2]
#: the CPU demo's CAT-Seg (registered by demo/register.py)
DEMO = ROOT / "configs" / "demo" / "cat_seg.yaml"
CONFIGS = sorted((ROOT / "configs" / "cat_seg").glob("*.yaml")) + [DEMO]


def _cfg(path: Path, *opts):
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.merge_from_file(str(path))
    cfg.merge_from_list(list(opts))
    return cfg


@pytest.mark.parametrize("path", [p for p in CONFIGS if not p.name.startswith("Base")], ids=str)
def test_config_names_registered_data_and_a_known_clip(path):
    cfg = _cfg(path)
    assert cfg.MODEL.META_ARCHITECTURE == "CATSeg"
    assert cfg.MODEL.CLIP.MODEL_NAME in available_models()
    assert cfg.MODEL.CAT_SEG.DENSE_RESIDUAL in DENSE_RESIDUALS
    registered = set(DatasetCatalog.list())
    assert set(cfg.DATASETS.TRAIN) | set(cfg.DATASETS.TEST) <= registered
    if path != DEMO:  # the published recipe
        assert cfg.MODEL.CLIP.FINETUNE == "attention" and cfg.SOLVER.CLIP_LR_MULTIPLIER == 0.01
        assert (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER) == (
            4,
            2e-4,
            80000,
        )
        assert cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE == "full_model"
        assert cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE == 0.01
        assert cfg.DATASETS.TRAIN == ("densevlm_coco_stuff_171_train_sem_seg",)
        assert len(cfg.DATASETS.TEST) == 6
        grid = cfg.MODEL.CAT_SEG.CLIP_RESOLUTION // (
            14 if "L-14" in cfg.MODEL.CLIP.MODEL_NAME else 16
        )
        assert grid == 24
        # refined weights use the per-token dense map they were trained for
        refined = "densevlm" in path.name or "clipself" in path.name
        assert cfg.MODEL.CAT_SEG.DENSE_RESIDUAL == ("token" if refined else "cls")


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, embed, width, blocks",
    [("eva02_b16", 512, 768, [3, 7]), ("openai_b16", 512, 768, [3, 7]),
     ("eva02_l14_336", 768, 1024, [7, 15])],
)  # fmt: skip
def test_full_size_models_build(name, embed, width, blocks):
    cfg = _cfg(
        ROOT / "configs" / "cat_seg" / f"{name}.yaml",
        "MODEL.CLIP.CHECKPOINT", "", "MODEL.CLIP.RANDOM_INIT", True, "MODEL.DEVICE", "cpu",
        "DATASETS.TRAIN", "()",
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg)
    assert model.backbone.embed_dim == embed and model.backbone.tower.width == width
    assert model.guidance_blocks == blocks
    assert model.aggregator.appearance_proj[0].in_channels == embed
    assert model.guidance_up[0].in_channels == width
    trainable = [n for n, p in model.backbone.model.named_parameters() if p.requires_grad]
    assert trainable and all("q_proj" in n or "v_proj" in n for n in trainable)
    del model
