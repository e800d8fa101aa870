"""One DenseVLM training step through tools/train_net.py on the CPU with full-size students of
other families (random weights): OpenAI ViT-L/14-336 and SigLIP 2 B/16, from their configs.

The teacher is the tiny EVA02 (EVA02-Tiny-16), not the configs' EVA02-CLIP-L/14-336: a full-size
L/14-336 teacher beside a full-size L/14 student, its optimiser state and checkpoint would take
more memory and time than these tests may (see docs/students.md). The teacher embeds the classes
with one prompt template, not 63; the student's come precomputed.
"""

from __future__ import annotations

import math

import numpy as np
import open_clip
import pytest
import torch

from densevlm_d2.engine.curves import read_metrics
from tests.helpers import ROOT, coco_train_photos, train_net

pytestmark = pytest.mark.slow

CONFIGS = ROOT / "configs" / "coco"
ONE_STEP = ("MODEL.CLIP.RANDOM_INIT", "True", "MODEL.CLIP.CHECKPOINT", "",
            "MODEL.DEVICE", "cpu",
            "MODEL.DENSEVLM.TEACHER.MODEL_NAME", "EVA02-Tiny-16",
            "MODEL.DENSEVLM.TEACHER.CHECKPOINT", "",
            "MODEL.DENSEVLM.TEXT.PROMPTS", '["a photo of a {}."]',
            "SOLVER.IMS_PER_BATCH", "1", "SOLVER.MAX_ITER", "1", "SOLVER.WARMUP_ITERS", "0",
            "SOLVER.CHECKPOINT_PERIOD", "100", "SOLVER.AMP.ENABLED", "False",
            "SOLVER.PLOT_CURVES", "False", "DATASETS.TEST", "()",
            "DATALOADER.NUM_WORKERS", "0", "SEED", "0")  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two images, and random unit class embeddings (316 x 768, the embedding size of both
    students) for the student: its text tower would take a minute or more of a shared CPU, and
    SigLIP 2's needs a Hugging Face tokenizer that is not here."""
    root = coco_train_photos(tmp_path_factory.mktemp("data"), 2)
    rows = np.random.default_rng(0).standard_normal((316, 768)).astype(np.float32)
    np.save(root / "student_316.npy", rows / np.linalg.norm(rows, axis=1, keepdims=True))
    return root


def _student_text(data) -> tuple[str, str]:
    pairs = f'[["densevlm_coco_stuff_ade20k_316", "{data / "student_316.npy"}"]]'
    return ("MODEL.CLIP.TEXT_EMBEDDINGS", pairs)


def _trained_one_step(out, log: str) -> None:
    assert "training DenseVLM for 1 iterations" in log, log[-3000:]
    losses = [r["total_loss"] for r in read_metrics(out) if "total_loss" in r]
    assert len(losses) == 1 and math.isfinite(losses[0])


def test_openai_l14_336_student_one_step(data, tmp_path):
    out = tmp_path / "l14"
    run = train_net(
        CONFIGS / "densevlm_openai_l14_336.yaml", *ONE_STEP,
        "INPUT.REGIONS.IMAGE_SIZE", "112",  # 8 x 8 tokens of 14 px
        *_student_text(data),
        "SOLVER.EXPORT_CLIP", "False",
        "OUTPUT_DIR", str(out),
        datasets=data,
    )  # fmt: skip
    log = run.stdout + run.stderr
    _trained_one_step(out, log)
    assert "ViT-L-14-336-quickgelu" in log


def test_siglip2_student_one_step_and_export(data, tmp_path):
    """The exported student loads into upstream open_clip strictly."""
    out = tmp_path / "siglip2"
    run = train_net(
        CONFIGS / "densevlm_siglip2_b16.yaml", *ONE_STEP,
        "INPUT.REGIONS.IMAGE_SIZE", "128",  # 8 x 8 tokens of 16 px
        *_student_text(data),
        "OUTPUT_DIR", str(out),
        datasets=data,
    )  # fmt: skip
    _trained_one_step(out, run.stdout + run.stderr)
    assert not (out / "clip_final_eva_clip.pt").exists()  # no EVA-CLIP layout for SigLIP
    state = torch.load(out / "clip_final_open_clip.pt", weights_only=True)
    upstream = open_clip.create_model("ViT-B-16-SigLIP2", pretrained=None)
    upstream.load_state_dict(state, strict=True)
