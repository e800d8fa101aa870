"""Weights by name, offline: hf:// references and model-zoo names resolved by huggingface_hub from a
hub cache laid out exactly as huggingface_hub lays it out, with HF_HUB_OFFLINE=1 and no network."""

from __future__ import annotations

import shutil

import pytest
import torch

import densevlm_d2
from densevlm_d2.clip.hub import MODEL_ZOO, is_cached, parse_hf_reference, resolve_weights
from densevlm_d2.clip.io import WeightFileNotFoundError
from densevlm_d2.model_zoo import main as zoo_main
from tests.helpers import COMMIT, DEMO_REGISTER, ROOT, put_in_hub_cache, train_net


def test_parse_references():
    ref = parse_hf_reference("hf://org/repo/sub/dir/w.pt@v1.0")
    assert (ref.repo_id, ref.filename, ref.revision) == ("org/repo", "sub/dir/w.pt", "v1.0")
    assert str(ref) == "hf://org/repo/sub/dir/w.pt@v1.0"
    assert "hf download org/repo sub/dir/w.pt --revision v1.0" == ref.fetch_command
    with pytest.raises(ValueError, match="not a hub reference"):
        parse_hf_reference("hf://org/w.pt")


def test_hf_references_and_zoo_names_resolve_offline(offline_hub, tiny_eva, tmp_path):
    weights = densevlm_d2.save_checkpoint(tiny_eva, tmp_path / "tiny.pt", "eva_clip")
    cached = put_in_hub_cache(offline_hub, "test-org/tiny-clip", "weights/tiny.pt", weights)
    for ref in (
        "hf://test-org/tiny-clip/weights/tiny.pt",
        f"hf://test-org/tiny-clip/weights/tiny.pt@{COMMIT}",
    ):
        assert resolve_weights(ref) == cached  # fmt: skip
    # the Python API and the strict loader read it by reference
    enc = densevlm_d2.load_clip("EVA02-Tiny-16", "hf://test-org/tiny-clip/weights/tiny.pt")
    assert all(torch.equal(v, tiny_eva.state_dict()[k]) for k, v in enc.model.state_dict().items())
    # a zoo name resolves to its published file, found in the cache
    entry = MODEL_ZOO["densevlm-eva02-b16"]
    assert is_cached(entry) is None
    zoo_file = put_in_hub_cache(
        offline_hub, entry.files[0].repo_id, entry.files[0].filename, weights
    )
    for ref in ("densevlm-eva02-b16", "zoo://densevlm-eva02-b16"):
        assert resolve_weights(ref) == zoo_file
    assert is_cached(entry) == zoo_file
    assert resolve_weights(weights) == weights  # local paths stay as they are


@pytest.mark.slow
def test_missing_files_say_how_to_fetch_them(offline_hub, tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        resolve_weights("hf://test-org/absent/w.pt")
    msg = str(e.value)
    assert "hf://test-org/absent/w.pt" in msg and "HF_HUB_OFFLINE is set" in msg
    assert "`hf download test-org/absent w.pt`" in msg
    with pytest.raises(
        WeightFileNotFoundError,
        match="teacher CLIP: zoo://densevlm-teacher.*lyhisme/DenseVLM/clipself_coco_6_save6_512_"
        "eva_vitl14_24layers.pt.*`python -m densevlm_d2.model_zoo download "
        "densevlm-teacher-eva02-l14-336`",
    ):
        densevlm_d2.load_checkpoint(
            densevlm_d2.build_clip_model("EVA02-CLIP-L-14-336"),
            "zoo://densevlm-teacher-eva02-l14-336",
            role="teacher CLIP",
        )
    with pytest.raises(ValueError, match="no such model-zoo entry"):
        resolve_weights("zoo://nothing-like-this")


@pytest.mark.slow
def test_load_clip_by_zoo_name_only(offline_hub, eva_b16_release_state, tmp_path):
    """The published EVA-CLIP B/16 (random weights in its exact release layout) from the hub
    cache, by name only: architecture and weights come from the zoo entry."""
    path = tmp_path / "EVA02_CLIP_B_psz16_s8B.pt"
    torch.save({k: v.half() for k, v in eva_b16_release_state.items()}, path)
    file = MODEL_ZOO["eva02-clip-b16"].files[0]
    put_in_hub_cache(offline_hub, file.repo_id, file.filename, path)
    enc = densevlm_d2.load_clip("eva02-clip-b16", image_size=224)
    assert enc.model_name == "EVA02-B-16"
    key = "visual.blocks.3.mlp.w3.weight"
    assert torch.equal(
        enc.model.state_dict()["visual.trunk.blocks.3.mlp.fc2.weight"],
        eva_b16_release_state[key].half().float(),
    )


def test_zoo_command_lists_and_reports_the_cache(offline_hub, tmp_path, capsys):
    assert zoo_main([]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in MODEL_ZOO) and "CC BY-NC 4.0" in out
    # not in the cache and offline: an error line, no traceback; the cause kept, and advice that
    # is not the command just run
    assert zoo_main(["download", "densevlm-eva02-b16"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: model-zoo entry 'densevlm-eva02-b16'") and "Traceback" not in err
    assert "LocalEntryNotFoundError: Cannot find the requested files" in err
    assert "HF_HUB_OFFLINE is set" in err and "unset HF_HUB_OFFLINE" in err
    assert "model_zoo download" not in err
    with pytest.raises(SystemExit):
        zoo_main(["download", "no-such-entry"])
    assert "did you mean" not in capsys.readouterr().err
    with pytest.raises(SystemExit):
        zoo_main(["download", "densevlm-eva02-b61"])
    assert "'densevlm-eva02-b61'; did you mean 'densevlm-eva02-b16'?" in capsys.readouterr().err


def test_near_miss_zoo_names_get_a_suggestion(offline_hub, tmp_path):
    with pytest.raises(
        FileNotFoundError, match="not a model-zoo name; did you mean 'eva02-clip-b16'"
    ):
        resolve_weights("eva02-clip-b61")
    with pytest.raises(ValueError, match="no such model-zoo entry; did you mean 'eva02-clip-l14'"):
        resolve_weights("zoo://eva02-clip-l41")
    # a path that is nothing like a zoo name stays a path (its reader says it is missing)
    assert resolve_weights(tmp_path / "w.pt") == tmp_path / "w.pt"
    with pytest.raises(
        WeightFileNotFoundError, match="CLIP checkpoint: densevlm-eva02-b61: .*did you"
    ):
        densevlm_d2.load_clip("EVA02-Tiny-16", "densevlm-eva02-b61")
    # the cause of a failed hub look-up is kept (not only its type)
    with pytest.raises(
        FileNotFoundError, match="LocalEntryNotFoundError: Cannot find the requested"
    ):
        resolve_weights("hf://test-org/absent/w.pt")


@pytest.mark.slow
def test_recipes_by_name_through_train_net_offline(offline_hub, tiny_eva, tmp_path):
    """tools/train_net.py with hf:// references for the student and the teacher, offline."""
    weights = densevlm_d2.save_checkpoint(tiny_eva, tmp_path / "tiny.pt", "eva_clip")
    put_in_hub_cache(offline_hub, "test-org/tiny-clip", "tiny.pt", weights)
    images = tmp_path / "data" / "coco" / "train2017"
    images.mkdir(parents=True)
    shutil.copy(ROOT / "densevlm_d2" / "assets" / "chelsea.jpg", images / "000000000001.jpg")
    ref = "hf://test-org/tiny-clip/tiny.pt"
    train_net(
        ROOT / "configs" / "coco" / "tiny_densevlm_cpu.yaml",
        "MODEL.CLIP.CHECKPOINT", ref, "MODEL.DENSEVLM.TEACHER.CHECKPOINT", ref,
        "SOLVER.MAX_ITER", "2", "DATASETS.TEST", "()",
        "MODEL.DENSEVLM.VOCABULARY", "densevlm_demo_world_val",
        "SOLVER.IMS_PER_BATCH", "1", "OUTPUT_DIR", str(tmp_path / "out"),
        register=(DEMO_REGISTER,),  # the vocabulary: the demo world's classes
        datasets=tmp_path / "data",
        HF_HUB_OFFLINE="1",
        HF_HUB_CACHE=str(offline_hub),
    )  # fmt: skip
    assert (tmp_path / "out" / "clip_final_eva_clip.pt").exists()
