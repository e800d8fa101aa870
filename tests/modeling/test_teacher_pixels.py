"""DenseVLM's teacher normalises pixels its own way when its family differs from the student's
(MODEL.DENSEVLM.TEACHER.PIXEL_MEAN / PIXEL_STD), the student's way otherwise."""

from __future__ import annotations

import pytest
import torch
from detectron2.config import get_cfg

import densevlm_d2
from densevlm_d2.engine import Trainer
from tests.helpers import ROOT

OPENAI_MEAN = [122.7709383, 116.7460125, 104.09373615]
OPENAI_STD = [68.5005327, 66.6321579, 70.3231630]


def _model(*opts):
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.merge_from_file(str(ROOT / "configs" / "coco" / "tiny_densevlm_cpu.yaml"))
    cfg.merge_from_list(["MODEL.CLIP.RANDOM_INIT", "True", "MODEL.CLIP.TEXT_CACHE.ENABLED",
                         "False", "MODEL.PIXEL_MEAN", "[127.5, 127.5, 127.5]",
                         "MODEL.PIXEL_STD", "[127.5, 127.5, 127.5]", *opts])  # fmt: skip
    return Trainer.build_model(cfg)


def _teacher_input(model, images):
    seen = []
    features = model.teacher.features

    def spy(x, **kwargs):
        seen.append(x)
        return features(x, **kwargs)

    model.teacher.features = spy
    model.teacher_features(images, [torch.tensor([[0.0, 0.0, 32.0, 32.0]])])
    return seen[0]


def test_teacher_pixels_own_or_the_students():
    images = torch.randint(0, 256, (1, 3, 64, 64)).float()
    model = _model("MODEL.DENSEVLM.TEACHER.PIXEL_MEAN", str(OPENAI_MEAN),
                   "MODEL.DENSEVLM.TEACHER.PIXEL_STD", str(OPENAI_STD))  # fmt: skip
    mean, std = torch.tensor(OPENAI_MEAN).view(3, 1, 1), torch.tensor(OPENAI_STD).view(3, 1, 1)
    torch.testing.assert_close(_teacher_input(model, images), (images - mean) / std)
    # the student still gets its own
    torch.testing.assert_close(model.pixels(images), images / 127.5 - 1)
    model.teacher_pixels = None  # unset: the student's normalisation
    torch.testing.assert_close(_teacher_input(model, images), images / 127.5 - 1)


def test_teacher_mean_without_std_is_an_error():
    with pytest.raises(ValueError, match="PIXEL_MEAN and PIXEL_STD are set together"):
        _model("MODEL.DENSEVLM.TEACHER.PIXEL_MEAN", str(OPENAI_MEAN))
