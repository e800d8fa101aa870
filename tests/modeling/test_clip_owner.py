"""CLIPViTBackbone as the one owner of the CLIP: where every other component finds it, and what it
offers them (crops, class embeddings, initial weights and the blend, teachers, export)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from torch import nn

import demo.register  # noqa: F401  (the demo's EVA02-Demo-16, configs/demo/fvit.yaml's CLIP)
import densevlm_d2
from densevlm_d2.clip import Vocabulary
from densevlm_d2.clip.text import TextEmbedder, TextSpec
from densevlm_d2.engine import CLIPCheckpointer, Trainer
from densevlm_d2.modeling import CLIPViTBackbone, RegionAlignmentModel, get_clip_backbone
from tests.conftest import randomize_


def _owner(tiny_eva, trainable_blocks=0, **kw):
    return CLIPViTBackbone(
        model_name="EVA02-Tiny-16",
        model=tiny_eva,
        finetune="blocks" if trainable_blocks else "frozen",
        trainable_blocks=trainable_blocks,
        text_cache_dir=None,
        **kw,
    )


def test_get_clip_backbone_finds_the_student_only():
    owner = CLIPViTBackbone(model_name="ViT-Tiny-16", text_cache_dir=None)
    assert get_clip_backbone(owner) is owner

    class WithTeacher(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Sequential(owner)  # the student, somewhere inside the backbone
            self.teacher = owner.frozen_copy()  # outside the backbone: never the model's CLIP

    model = WithTeacher()
    assert get_clip_backbone(model) is owner
    assert get_clip_backbone(nn.parallel.DataParallel(model)) is owner
    with pytest.raises(ValueError, match="has no backbone"):
        get_clip_backbone(nn.Linear(2, 2))
    model.backbone.append(owner.frozen_copy())
    with pytest.raises(ValueError, match="holds 2 CLIPViTBackbone modules"):
        get_clip_backbone(model)


def test_fvit_detector_clip_is_found_and_frozen():
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.merge_from_file("configs/demo/fvit.yaml")
    model = build_model(cfg)
    clip = get_clip_backbone(model)
    assert clip is model.backbone.bottom_up.clip_backbone and clip.num_trainable_blocks == 0
    assert clip.is_frozen and not any(p.requires_grad for p in clip.parameters())
    assert not clip.is_teacher and not clip.initial_state
    # F-ViT's CLIP is frozen: a config that asks it to train is refused
    cfg.MODEL.CLIP.FINETUNE, cfg.MODEL.CLIP.TRAINABLE_BLOCKS = "blocks", 3
    with pytest.raises(ValueError, match="F-ViT's CLIP is frozen: MODEL.CLIP.FINETUNE must be"):
        build_model(cfg)


@torch.no_grad()
def test_encode_crops_batches_the_cls_embedding(tiny_eva):
    owner = _owner(tiny_eva)
    crops = torch.randn(5, 3, 32, 48)
    ref = F.normalize(owner.features(crops, dense=False, image=True).image, dim=-1)
    for batch in (1, 2, 64):
        assert torch.allclose(owner.encode_crops(crops, batch), ref, atol=1e-6)
    assert owner.encode_crops(torch.zeros(0, 3, 32, 32)).shape == (0, owner.embed_dim)


def test_text_embeddings_from_names_or_a_published_file(tiny_eva, tmp_path):
    owner = _owner(tiny_eva)
    names = ["cat", "sky"]
    ref = TextEmbedder(tiny_eva, "EVA02-Tiny-16", cache_dir=None)(Vocabulary.from_names(names))
    assert torch.allclose(owner.text_embeddings(names), ref)
    raw_norms = owner.text_embeddings(names, TextSpec(renormalize=False)).norm(dim=-1)
    assert (raw_norms < 0.9999).all()  # a mean of unit vectors, not re-normalised
    # a precomputed file is given per vocabulary (MODEL.CLIP.TEXT_EMBEDDINGS pairs)
    path = tmp_path / "published.npy"
    rows = np.random.default_rng(0).normal(size=(2, owner.embed_dim)).astype(np.float32)
    np.save(path, rows)
    published = _owner(tiny_eva, text_embeddings_files={"my_classes": path})
    assert published.text_embeddings_files == {"my_classes": str(path)}
    mine = Vocabulary.from_names(names, source="my_classes")
    assert torch.equal(published.text_embeddings(mine), torch.from_numpy(rows))
    # other vocabularies (here: a bare list) are computed by the text tower as before
    assert torch.allclose(published.text_embeddings(names), ref)
    with pytest.raises(ValueError, match="has 2 class embeddings but the vocabulary of my_classes "
                       "has 3"):  # fmt: skip
        published.text_embeddings(mine.replace(names=("cat", "sky", "grass")))


def test_initial_state_and_blend(tiny_eva):
    owner = _owner(tiny_eva, trainable_blocks=1)
    trainable = {n for n, p in owner.model.named_parameters() if p.requires_grad}
    assert set(owner.initial_state) == trainable
    assert all(n.startswith("visual.trunk.blocks.1.") for n in trainable)
    # the last block's query/key projections are never used by the value path: frozen
    assert not any(".attn.q_proj." in n or ".attn.k_proj." in n for n in trainable)
    params = dict(owner.model.named_parameters())
    initial = {k: v.clone() for k, v in owner.initial_state.items()}
    with torch.no_grad():
        for k in trainable:
            params[k].add_(1.0)
    trained = {k: params[k].detach().clone() for k in trainable}
    with owner.blended(0.9):
        for k in trainable:
            assert torch.allclose(params[k], 0.9 * trained[k] + 0.1 * initial[k], atol=1e-6)
    assert all(torch.equal(params[k], trained[k]) for k in trainable)  # back to trained
    with owner.blended(1.0):
        assert all(torch.equal(params[k], trained[k]) for k in trainable)
    frozen = _owner(randomize_(densevlm_d2.build_clip_model("EVA02-Tiny-16")))
    assert frozen.initial_state == {} and frozen.num_trainable_blocks == 0


def test_frozen_copy_is_an_independent_teacher(tiny_eva):
    owner = _owner(tiny_eva, trainable_blocks=2)
    teacher = owner.frozen_copy()
    assert teacher.is_teacher and teacher.num_trainable_blocks == 0 and not teacher.initial_state
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    with torch.no_grad():
        owner.model.visual.trunk.blocks[0].mlp.fc2.weight.add_(1.0)
    assert not torch.equal(
        owner.model.visual.trunk.blocks[0].mlp.fc2.weight,
        teacher.model.visual.trunk.blocks[0].mlp.fc2.weight,
    )
    with pytest.raises(ValueError, match="a teacher CLIP is frozen"):
        _owner(tiny_eva, trainable_blocks=1, teacher=True)


def test_export_formats_and_save(tiny_eva, tiny_vit, tmp_path):
    eva, vit = _owner(tiny_eva), CLIPViTBackbone(model_name="ViT-Tiny-16", model=tiny_vit)
    assert eva.export_formats == ("eva_clip", "open_clip") and vit.export_formats == ("open_clip",)
    for fmt in eva.export_formats:
        again = densevlm_d2.build_clip_model("EVA02-Tiny-16")
        densevlm_d2.load_checkpoint(again, eva.save(tmp_path / f"{fmt}.pt", fmt))
        assert all(torch.equal(v, tiny_eva.state_dict()[k]) for k, v in again.state_dict().items())


def _region_cfg(**clip):
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.merge_from_file("configs/coco/tiny_densevlm_cpu.yaml")
    cfg.MODEL.META_ARCHITECTURE = "CLIPSelf"
    cfg.MODEL.CLIP.TEXT_CACHE.ENABLED = False
    for k, v in clip.items():
        setattr(cfg.MODEL.CLIP, k, v)
    return cfg


def test_raw_clip_weights_become_the_blends_initial_state(tiny_eva, tmp_path):
    """MODEL.WEIGHTS with a raw CLIP file: the student takes it strictly, and the weight blend
    starts from it (not from the random weights the model was built with)."""
    path = densevlm_d2.save_checkpoint(tiny_eva, tmp_path / "start.pt", "eva_clip")
    model = Trainer.build_model(_region_cfg())
    CLIPCheckpointer(model).load(str(path))
    for k, v in model.backbone.initial_state.items():
        assert torch.equal(v, tiny_eva.state_dict()[k]), k
    # CLIPSelf's teacher is a frozen copy that a checkpoint never touches
    assert model.teacher.is_teacher


def test_region_alignment_contract():
    with pytest.raises(ValueError, match="CLIPSelf trains the student: set MODEL.CLIP.FINETUNE"):
        Trainer.build_model(_region_cfg(FINETUNE="frozen", TRAINABLE_BLOCKS=0))
    registry = {
        name: densevlm_d2.modeling.meta_arch.__dict__[name]
        for name in ("DenseVLM", "CLIPSelf", "RegionCLIP")
    }
    assert {n: a.needs_crops for n, a in registry.items()} == {
        "DenseVLM": False,
        "CLIPSelf": True,
        "RegionCLIP": False,
    }
    assert all(issubclass(a, RegionAlignmentModel) for a in registry.values())
    cfg = _region_cfg()
    cfg.MODEL.META_ARCHITECTURE = "CLIPRegionClassifier"
    with pytest.raises(ValueError, match="CLIPRegionClassifier does not train"):
        Trainer.build_train_loader(cfg)
