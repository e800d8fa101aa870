"""Config: one add_*_config per component, and renamed keys that keep working for one release."""

from __future__ import annotations

import logging

import pytest
from detectron2.config import get_cfg
from detectron2.modeling import build_backbone, build_model

import densevlm_d2
from densevlm_d2 import config

NAMESPACES = {
    config.add_clip_config: ["MODEL.CLIP"],
    config.add_region_evaluation_config: ["TEST.REGIONS"],
    config.add_region_training_config: [
        "INPUT.REGIONS",
        "MODEL.DENSEVLM",
        "MODEL.CLIPSELF",
        "MODEL.REGIONCLIP",
    ],
    config.add_fvit_config: ["MODEL.FVIT", "MODEL.TEXT_CLASSIFIER", "INPUT.LSJ"],
}


def _has(cfg, key):
    node = cfg
    for part in key.split("."):
        if part not in node:
            return False
        node = node[part]
    return True


def test_each_component_adds_its_own_namespace():
    for add, keys in NAMESPACES.items():
        cfg = get_cfg()
        add(cfg)
        assert all(_has(cfg, k) for k in keys), add.__name__
        others = [k for a, ks in NAMESPACES.items() if a is not add for k in ks]
        assert not any(_has(cfg, k) for k in others), add.__name__
    cfg = get_cfg()
    config.add_solver_config(cfg)
    assert cfg.SOLVER.WEIGHT_BLEND_ALPHA == 1.0 and cfg.SOLVER.AMP.PRECISION == "float16"


def _deprecated_cfg(tmp_path, yaml: str):
    path = tmp_path / "old.yaml"
    path.write_text(yaml)
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.merge_from_file(str(path))
    return cfg


def test_deprecated_keys_are_translated_with_a_warning(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(config, "_warned", set())
    cfg = _deprecated_cfg(
        tmp_path,
        """
MODEL:
  BACKBONE:
    NAME: "CLIPViTBackbone"
  CLIP:
    MODEL_NAME: "ViT-Tiny-16"
    FROZEN: False
    TRAINABLE_BLOCKS: 1
    TEXT_CACHE_DIR: ""
  TEXT_CLASSIFIER:
    EMBED_DIM: 768
  FVIT:
    SCORE_FUSION:
      ALPHA: 0.25
      VLM_TEMPERATURE: 50.0
INPUT:
  REGIONS:
    CROP_SCALE: 1.2
""",
    )
    cfg.freeze()
    with caplog.at_level(logging.WARNING, logger="densevlm_d2.config"):
        new = config.resolve_deprecated_keys(cfg)
    assert new is not cfg and new.is_frozen()
    assert new.MODEL.CLIP.TRAINABLE_BLOCKS == 1 and new.MODEL.CLIP.TEXT_CACHE.ENABLED is False
    assert new.INPUT.REGIONS.GRID_CROP_SCALE == 1.2
    fusion = new.MODEL.TEXT_CLASSIFIER.SCORE_FUSION
    assert (fusion.CLIP_WEIGHT_BASE, fusion.CLIP_WEIGHT_NOVEL, fusion.CLIP_LOGIT_SCALE) == (
        0.25,
        0.8,
        50.0,
    )
    for old in ("FROZEN", "TEXT_CACHE_DIR", "EMBED_DIM", "SCORE_FUSION.ALPHA", "CROP_SCALE"):
        assert any(old in r.getMessage() and "deprecated" in r.getMessage() for r in caplog.records)
    assert config.resolve_deprecated_keys(new) is new  # nothing left to translate
    # the components read them through resolve_deprecated_keys
    backbone = build_backbone(cfg)
    assert backbone.num_trainable_blocks == 1 and backbone.text_cache_dir is None


def test_deprecated_frozen_and_cache_dir_values(tmp_path):
    cfg = _deprecated_cfg(
        tmp_path,
        "MODEL:\n  CLIP:\n    FROZEN: True\n    TRAINABLE_BLOCKS: 12\n"
        "    TEXT_CACHE_DIR: /some/where\n",
    )
    new = config.resolve_deprecated_keys(cfg)
    assert new.MODEL.CLIP.TRAINABLE_BLOCKS == 0
    assert new.MODEL.CLIP.TEXT_CACHE.ENABLED and new.MODEL.CLIP.TEXT_CACHE.DIR == "/some/where"
    cfg = _deprecated_cfg(tmp_path, "MODEL:\n  CLIP:\n    TEXT_CACHE_DIR: default\n")
    new = config.resolve_deprecated_keys(cfg)
    assert new.MODEL.CLIP.TEXT_CACHE.ENABLED and new.MODEL.CLIP.TEXT_CACHE.DIR == ""
    cfg = _deprecated_cfg(tmp_path, "MODEL:\n  CLIP:\n    FROZEN: False\n")
    with pytest.raises(ValueError, match="TRAINABLE_BLOCKS > 0"):
        config.resolve_deprecated_keys(cfg)


def test_fvit_embedding_size_comes_from_the_clip(tmp_path):
    """MODEL.TEXT_CLASSIFIER.EMBED_DIM is gone: the text classifier takes the CLIP's embedding size
    from the backbone's clip_dense ShapeSpec, whatever an old config says."""
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.merge_from_file("configs/demo/fvit.yaml")
    cfg.MODEL.TEXT_CLASSIFIER.EMBED_DIM = 999  # deprecated, ignored
    model = build_model(cfg)
    predictor = model.roi_heads.box_predictor
    assert predictor.embed_dim == model.backbone.output_shape()["clip_dense"].channels == 128
    assert predictor.cls_fc.out_features == 128
