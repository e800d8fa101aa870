"""Config: one add_*_config per component that adds only what is missing, a TEXT node per
text-embedding component, one switch for what of the CLIP trains, and every config file valid."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from detectron2.config import CfgNode, get_cfg
from detectron2.modeling import build_backbone, build_model

import densevlm_d2
from densevlm_d2 import config
from densevlm_d2.clip.text import TextSpec
from densevlm_d2.modeling.open_vocab import text_spec

ROOT = Path(__file__).resolve().parents[1]

NAMESPACES = {
    config.add_clip_config: ["MODEL.CLIP"],
    config.add_region_evaluation_config: ["TEST.REGIONS"],
    config.add_region_training_config: [
        "INPUT.REGIONS.MODE",
        "MODEL.DENSEVLM",
        "MODEL.CLIPSELF",
        "MODEL.REGIONCLIP",
    ],
    config.add_fvit_config: ["MODEL.FVIT", "MODEL.TEXT_CLASSIFIER", "INPUT.LSJ"],
    config.add_dense_segmentation_config: ["MODEL.DENSE_SEG"],
    config.add_cat_seg_config: ["MODEL.CAT_SEG"],
}
TEXT_NODES = [
    "TEST.REGIONS",
    "MODEL.DENSEVLM",
    "MODEL.REGIONCLIP",
    "MODEL.TEXT_CLASSIFIER",
    "MODEL.DENSE_SEG",
    "MODEL.CAT_SEG",
]


def _get(cfg, key):
    node = cfg
    for part in key.split("."):
        if part not in node:
            return None
        node = node[part]
    return node


def _keys(node, prefix=""):
    for k, v in node.items():
        if isinstance(v, CfgNode):
            yield from _keys(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


def test_each_component_adds_its_own_namespace():
    for add, keys in NAMESPACES.items():
        cfg = get_cfg()
        add(cfg)
        assert all(_get(cfg, k) is not None for k in keys), add.__name__
        others = [k for a, ks in NAMESPACES.items() if a is not add for k in ks]
        assert not any(_get(cfg, k) is not None for k in others), add.__name__
    for add in (config.add_region_evaluation_config, config.add_region_training_config):
        cfg = get_cfg()
        add(cfg)
        assert cfg.INPUT.REGIONS.IMAGE_SIZE == 512  # the canvas both region mappers read
    cfg = get_cfg()
    config.add_solver_config(cfg)
    assert cfg.SOLVER.WEIGHT_BLEND_ALPHA == 1.0 and cfg.SOLVER.AMP.PRECISION == "float16"
    assert cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupCosine"


def test_add_densevlm_config_adds_whatever_is_missing():
    """(It used to return early when MODEL.CLIP existed, so add_clip_config then
    add_densevlm_config added nothing else.)"""
    full = densevlm_d2.add_densevlm_config(get_cfg())
    partial = get_cfg()
    config.add_clip_config(partial)
    partial.MODEL.CLIP.MODEL_NAME = "ViT-B-16"  # a setting made in between
    partial.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"
    config.add_solver_config(partial)  # first time: our default schedule
    partial.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"
    densevlm_d2.add_densevlm_config(partial)
    assert sorted(_keys(partial)) == sorted(_keys(full))
    assert partial.MODEL.CLIP.MODEL_NAME == "ViT-B-16"  # nothing overwritten
    assert partial.SOLVER.LR_SCHEDULER_NAME == "WarmupMultiStepLR"
    again = densevlm_d2.add_densevlm_config(full.clone())
    assert again == full  # idempotent


def test_no_deprecated_or_null_keys():
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    keys = set(_keys(cfg))
    for gone in (
        "MODEL.CLIP.FROZEN",
        "MODEL.CLIP.TEXT_CACHE_DIR",
        "MODEL.CLIP.IMAGE_SIZE",
        "INPUT.REGIONS.CROP_SCALE",
        "MODEL.TEXT_CLASSIFIER.EMBED_DIM",
        "MODEL.TEXT_CLASSIFIER.TEMPERATURE",
        "MODEL.FVIT.SCORE_FUSION.ALPHA",
        "TEST.REGIONS.TEXT_EMBEDDINGS",
        "MODEL.DENSEVLM.STUDENT_TEXT_EMBEDDINGS",
        "MODEL.REGIONCLIP.CONCEPT_EMBEDDINGS",
        "MODEL.DENSE_SEG.TEXT_EMBEDDINGS",
        "MODEL.DENSE_SEG.TEMPLATES",
        "MODEL.CAT_SEG.TEMPLATES",
    ):
        assert gone not in keys, gone
    ours = keys - set(_keys(get_cfg()))
    assert len(ours) > 100
    assert not [k for k in ours if _get(cfg, k) is None], "a key of ours defaults to None"


def test_every_text_node_is_the_same_concept():
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    for where in TEXT_NODES:
        node = _get(cfg, where)
        assert sorted(node.TEXT) == ["PROMPTS", "PROMPT_STYLE", "SYNONYMS"], where
        assert isinstance(text_spec(node, where, allow_max=True, ensemble=where != "MODEL.CAT_SEG"),
                          TextSpec)  # fmt: skip
    assert text_spec(cfg.MODEL.DENSE_SEG, "x", allow_max=True) == TextSpec(
        prompts="imagenet", style="plain", synonyms="max"
    )
    assert text_spec(cfg.MODEL.CAT_SEG, "x", ensemble=False).templates == (
        "A photo of a {} in the scene",
    )
    node = cfg.MODEL.TEXT_CLASSIFIER.clone()
    node.TEXT.SYNONYMS = "max"
    with pytest.raises(ValueError, match="MODEL.TEXT_CLASSIFIER.TEXT.SYNONYMS 'max'"):
        text_spec(node, "MODEL.TEXT_CLASSIFIER")
    node.TEXT.PROMPTS = ["coco"]
    with pytest.raises(ValueError, match="MODEL.TEXT_CLASSIFIER.TEXT: unknown prompt set 'coco'"):
        text_spec(node, "MODEL.TEXT_CLASSIFIER", allow_max=True)


def _tiny_cfg(**clip):
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.MODEL.BACKBONE.NAME = "CLIPViTBackbone"
    cfg.MODEL.CLIP.MODEL_NAME = "ViT-Tiny-16"
    for k, v in clip.items():
        cfg.MODEL.CLIP[k] = v
    return cfg


def test_one_switch_says_what_trains():
    assert build_backbone(_tiny_cfg()).is_frozen  # the default: frozen
    b = build_backbone(_tiny_cfg(FINETUNE="blocks", TRAINABLE_BLOCKS=1))
    assert b.num_trainable_blocks == 1 and not b.is_frozen
    with pytest.raises(ValueError, match="FINETUNE 'blocks' trains the last .* got 0"):
        build_backbone(_tiny_cfg(FINETUNE="blocks"))
    with pytest.raises(ValueError, match="TRAINABLE_BLOCKS \\(1\\) is for MODEL.CLIP.FINETUNE"):
        build_backbone(_tiny_cfg(TRAINABLE_BLOCKS=1))
    with pytest.raises(ValueError, match="MODEL.CLIP.FINETUNE must be one of"):
        build_backbone(_tiny_cfg(FINETUNE="some"))


def test_text_embeddings_pairs_are_checked():
    for bad in (["a.npy"], [["only_name"]], [["", "a.npy"]], [["x", "a.npy"], ["x", "b.npy"]]):
        with pytest.raises(ValueError, match="MODEL.CLIP.TEXT_EMBEDDINGS"):
            build_backbone(_tiny_cfg(TEXT_EMBEDDINGS=bad))
    b = build_backbone(_tiny_cfg(TEXT_EMBEDDINGS=[["my_dataset", "emb.npy"]]))
    assert b.text_embeddings_files == {"my_dataset": "emb.npy"}


def test_fvit_embedding_size_comes_from_the_clip():
    """The text classifier takes the CLIP's embedding size from the backbone's clip_dense
    ShapeSpec (no key repeats it)."""
    import demo.register  # noqa: F401  (the demo's EVA02-Demo-16)

    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.merge_from_file(str(ROOT / "configs/demo/fvit.yaml"))
    cfg.DATASETS.TRAIN = cfg.DATASETS.TEST = ()
    model = build_model(cfg)
    predictor = model.roi_heads.box_predictor
    assert predictor.embed_dim == model.backbone.output_shape()["clip_dense"].channels == 128
    assert predictor.cls_fc.out_features == 128
    assert predictor.logit_scale.item() == 50.0 and predictor.logit_scale.requires_grad


@pytest.mark.parametrize(
    "path", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").rglob("*.yaml"))
)
def test_every_config_file_merges(path):
    """Every key of every config file exists (merging a renamed or removed key would fail)."""
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.merge_from_file(str(ROOT / path))
    raw = yaml.safe_load((ROOT / path).read_text())
    assert raw  # not empty
