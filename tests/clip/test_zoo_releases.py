"""The published refined CLIPs of the model zoo (DeCLIP on the hub; CLIPSelf and its
RegionCLIP-style checkpoints, downloaded by hand): resolved by name offline, loaded strictly from
random weights in each release's exact key layout and file format, and accepted by name by every
config family."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg

import densevlm_d2
from densevlm_d2.clip.checkpoint import (
    CheckpointFormat,
    eva_to_open_clip,
    export_state_dict,
    load_checkpoint,
)
from densevlm_d2.clip.hub import (
    MODEL_ZOO,
    ManualFile,
    check_zoo_model,
    is_cached,
    resolve_weights,
)
from densevlm_d2.engine.preflight import check_weights
from densevlm_d2.modeling import CLIPViTBackbone
from tests.conftest import published_rope, release_key_shapes
from tests.helpers import ROOT, put_in_hub_cache

DECLIP = ("declip-eva02-b16", "declip-eva02-l14-336")
CLIPSELF = tuple(n for n, e in MODEL_ZOO.items() if e.manual)
NEW = DECLIP + CLIPSELF


def release_checkpoint(state: dict[str, torch.Tensor], name: str) -> dict:
    """What the DeCLIP and CLIPSelf training scripts save (``torch.save`` of this dict): the
    EVA-CLIP state dict of the blended student under ``state_dict``, with the epoch, the run's
    name, AdamW's state and the AMP grad scaler's."""
    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.AdamW([param], lr=1e-5, weight_decay=0.1)
    param.grad = torch.ones(3)
    optimizer.step()
    scaler = {
        "scale": 65536.0,
        "growth_factor": 2.0,
        "backoff_factor": 0.5,
        "growth_interval": 2000,
        "_growth_tracker": 0,
    }
    return {
        "epoch": 6,
        "name": name,
        "state_dict": state,
        "optimizer": optimizer.state_dict(),
        "scaler": scaler,
    }


def constant_release_state(model: str) -> dict[str, torch.Tensor]:
    """The release's every key at its full shape, each tensor one distinct value (a stride-0
    view, so a full-size file costs a few kilobytes); RoPE buffers with their real values."""
    shapes = release_key_shapes(model)
    cos, sin = published_rope(int(round(shapes["visual.rope.freqs_cos"][0] ** 0.5)))
    state = {}
    for i, (key, shape) in enumerate(shapes.items()):
        if key.endswith("rope.freqs_cos"):
            state[key] = cos.half()
        elif key.endswith("rope.freqs_sin"):
            state[key] = sin.half()
        else:
            state[key] = torch.tensor(1.0 + i / 1024, dtype=torch.float16).expand(shape)
    return state


def _cache_release(entry_name: str, source: Path, offline_hub, monkeypatch, tmp_path) -> Path:
    """Put ``source`` where the entry's first file is looked up: the hub cache, or (a file
    downloaded by hand) the checkpoints folder."""
    file = MODEL_ZOO[entry_name].files[0]
    if isinstance(file, ManualFile):
        folder = tmp_path / "checkpoints"
        folder.mkdir(exist_ok=True)
        monkeypatch.setenv("DENSEVLM_CHECKPOINTS", str(folder))
        (folder / file.filename).write_bytes(source.read_bytes())
        return folder / file.filename
    return put_in_hub_cache(offline_hub, file.repo_id, file.filename, source)


# --------------------------------------------------------------------------------------------------
# Resolution by name, offline
# --------------------------------------------------------------------------------------------------
def test_new_entries_resolve_offline_from_a_hub_cache(offline_hub, monkeypatch, tmp_path):
    source = tmp_path / "weights.pt"
    torch.save({"state_dict": {"logit_scale": torch.ones(())}}, source)
    for name in NEW:
        entry = MODEL_ZOO[name]
        assert is_cached(entry) is None, name
        placed = _cache_release(name, source, offline_hub, monkeypatch, tmp_path)
        for ref in (name, f"zoo://{name}"):
            assert resolve_weights(ref) == placed, name
        assert is_cached(entry) == placed
    # a DeCLIP release renamed as users share it is found too (its second file name)
    entry = MODEL_ZOO["declip-eva02-l14-336"]
    second = entry.files[1]
    assert second.filename == "DeCLIP_EVA-L_DINOv2-L_csa_0.05_2.0.pt"
    cache = tmp_path / "hub2"
    cache.mkdir()
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    link = put_in_hub_cache(cache, second.repo_id, second.filename, source)
    assert resolve_weights("declip-eva02-l14-336") == link


def test_hand_downloaded_entries_say_where_to_get_them(offline_hub, monkeypatch, tmp_path):
    monkeypatch.setenv("DENSEVLM_CHECKPOINTS", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError) as e:
        resolve_weights("clipself-eva02-b16-coco-proposals")
    msg = str(e.value)
    assert "eva_vitb16_coco_clipself_proposals.pt is not in" in msg
    assert "https://drive.google.com/file/d/1Tf8gJWmbRnsX8verC6Ee7lK3Dm781p5M/view" in msg
    assert str(tmp_path / "empty" / "eva_vitb16_coco_clipself_proposals.pt") in msg
    assert "DENSEVLM_CHECKPOINTS" in msg


def test_every_new_entry_has_a_source_licence_and_numbers():
    for name in NEW:
        entry = MODEL_ZOO[name]
        assert entry.source and entry.licence and entry.description, name
        assert entry.layout == "eva_clip"
    for name in CLIPSELF:
        assert MODEL_ZOO[name].licence.startswith("NTU S-Lab License 1.0")
        assert len(MODEL_ZOO[name].published) == 1  # its F-ViT number
    assert "15.20 / 21.47 / 36.57" in next(iter(MODEL_ZOO["declip-eva02-b16"].published.values()))


# --------------------------------------------------------------------------------------------------
# The release formats, full size, through the strict loader
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["declip-eva02-b16", "clipself-eva02-b16-coco-proposals"])
def test_b16_release_round_trip_by_name(
    name, eva_b16_release_state, offline_hub, monkeypatch, tmp_path
):
    """Random weights in the release's layout and file format, loaded by name through
    MODEL.CLIP.CHECKPOINT (strict), written back in the release layout: the same tensors."""
    path = tmp_path / "release.pt"
    torch.save(release_checkpoint(eva_b16_release_state, name), path)
    _cache_release(name, path, offline_hub, monkeypatch, tmp_path)
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.MODEL.CLIP.MODEL_NAME = MODEL_ZOO[name].model
    cfg.MODEL.CLIP.CHECKPOINT = f"zoo://{name}"
    backbone = CLIPViTBackbone(cfg, None)
    assert backbone.weights_source == f"zoo://{name}"
    exported = export_state_dict(backbone.model, "eva_clip")
    assert exported.keys() == eva_b16_release_state.keys()
    for k, v in eva_b16_release_state.items():
        if "rope" in k:  # recomputed as published (float32); the file's are in float64 maths
            assert torch.allclose(exported[k], v, atol=1e-5), k
        else:
            assert torch.equal(exported[k], v), k


@pytest.mark.slow
def test_l14_336_release_layout_loads_every_key(tmp_path):
    """DeCLIP's and CLIPSelf's L/14-336 releases: every key of the layout at full shape, in the
    training script's wrapper, in half precision; each lands on its own model tensor."""
    state = constant_release_state("EVA02-CLIP-L-14-336")
    path = tmp_path / "epoch_6.pt"
    torch.save(release_checkpoint(state, "DeCLIP_EVA-L_DINOv2-L_csa_0.05_2.0"), path)
    assert path.stat().st_size < 8 * 2**20  # stride-0 views (and the RoPE tables): 4 MB, not 856
    model = densevlm_d2.build_clip_model("EVA02-CLIP-L-14-336")
    assert load_checkpoint(model, path) is CheckpointFormat.EVA_CLIP
    loaded = model.state_dict()
    mapped = eva_to_open_clip(state, model)
    assert mapped.keys() == loaded.keys()
    for key, value in mapped.items():
        assert torch.equal(loaded[key], value.float().expand_as(loaded[key])), key


# --------------------------------------------------------------------------------------------------
# Every config family accepts every entry of its architecture by name
# --------------------------------------------------------------------------------------------------
FAMILIES = {
    "EVA02-CLIP-B-16": (
        "configs/eval/coco_panoptic_eva02_b16.yaml",
        "configs/sem_seg/eva02_b16/ade20k_150.yaml",
        "configs/cat_seg/eva02_b16.yaml",
        "configs/ovcoco/fvit_eva02_b16.yaml",
        "configs/ovlvis/fvit_eva02_b16.yaml",
    ),
    "EVA02-CLIP-L-14-336": (
        "configs/eval/coco_panoptic_eva02_l14_336.yaml",
        "configs/sem_seg/eva02_l14_336/ade20k_150.yaml",
        "configs/cat_seg/eva02_l14_336.yaml",
        "configs/ovcoco/fvit_eva02_l14.yaml",
        "configs/ovlvis/fvit_eva02_l14.yaml",
    ),
}


@pytest.mark.parametrize("model", sorted(FAMILIES))
def test_config_families_accept_each_entry_by_name(model, monkeypatch, tmp_path):
    monkeypatch.setenv("DENSEVLM_CHECKPOINTS", str(tmp_path))
    other = next(m for m in FAMILIES if m != model)
    for path in FAMILIES[model]:
        cfg = densevlm_d2.add_densevlm_config(get_cfg())
        cfg.merge_from_file(str(ROOT / path))
        assert cfg.MODEL.CLIP.MODEL_NAME == model, path
        for name in NEW:
            cfg.MODEL.CLIP.CHECKPOINT = name
            if MODEL_ZOO[name].model == model:
                check_weights(cfg)  # the reference is accepted, nothing is read
            else:
                with pytest.raises(
                    ValueError, match=f"'{name}' is an {other} checkpoint but MODEL.CLIP.MODEL_NAME"
                ):
                    check_weights(cfg)


def test_zoo_model_check_names_both_architectures():
    check_zoo_model("declip-eva02-b16", "EVA02-B-16", "KEY")  # the open_clip spelling too
    check_zoo_model("some/file.pt", "EVA02-CLIP-L-14-336", "KEY")  # files: checked when read
    with pytest.raises(ValueError, match="is an EVA02-CLIP-L-14-336 checkpoint but KEY is "):
        check_zoo_model("zoo://declip-eva02-l14-336", "EVA02-CLIP-B-16", "KEY")


@pytest.mark.parametrize(
    "path", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").rglob("*.yaml"))
)
def test_shipped_configs_name_zoo_entries_of_their_architecture(path):
    from densevlm_d2.engine.preflight import _check_architectures

    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.merge_from_file(str(ROOT / path))
    _check_architectures(cfg, [cfg.MODEL.WEIGHTS])


def test_download_all_skips_the_files_downloaded_by_hand(offline_hub, monkeypatch, capsys):
    from densevlm_d2 import model_zoo

    asked = []
    monkeypatch.setattr(model_zoo, "resolve_weights", lambda n, **k: asked.append(n) or n)
    assert model_zoo.main(["download", "all"]) == 0
    assert asked == [n for n, e in MODEL_ZOO.items() if not e.manual]
    assert "declip-eva02-b16" in asked
    out = capsys.readouterr().out
    assert "downloaded by hand (see docs/model_zoo.md), skipped: clipself-eva02-b16-coco" in out


def test_a_teacher_entry_of_another_architecture_is_refused():
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.merge_from_file(str(ROOT / "configs/coco/densevlm_eva02_b16.yaml"))
    check_weights(cfg)  # as shipped: the L/14-336 teacher entry on the L/14-336 teacher
    cfg.MODEL.DENSEVLM.TEACHER.CHECKPOINT = "declip-eva02-b16"
    with pytest.raises(
        ValueError,
        match="'declip-eva02-b16' is an EVA02-CLIP-B-16 checkpoint but "
        "MODEL.DENSEVLM.TEACHER.MODEL_NAME is 'EVA02-CLIP-L-14-336'",
    ):
        check_weights(cfg)
