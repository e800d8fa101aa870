"""Dense open-vocabulary prediction and its drawing (tools/predict.py's core) on a tiny model."""

from __future__ import annotations

import densevlm_d2
from densevlm_d2.visualization import dense_prediction, draw_dense_prediction

import numpy as np
import torch
from PIL import Image


def test_dense_prediction_and_drawing(tiny_vit):
    encoder = densevlm_d2.CLIPRegionEncoder(
        tiny_vit, "ViT-Tiny-16", image_size=96, text_cache_dir=None
    )
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 80, 3), dtype=np.uint8))
    names = ["cat", "sky", "grass"]
    classifier = encoder.text_classifier(names)
    labels = dense_prediction(encoder, image, classifier)
    assert labels.shape == (50, 80) and labels.dtype == torch.int64
    assert 0 <= labels.min() and labels.max() < 3
    # the top-left pixel takes the class of the top-left token
    with torch.no_grad():
        token = encoder.encode_dense(encoder.preprocess(image))[0, :, 0, 0]
    assert labels[0, 0] == (classifier @ token).argmax()
    drawn = draw_dense_prediction(image, labels, names)
    assert drawn.shape == (50, 80, 3) and drawn.dtype == np.uint8
    assert not np.array_equal(drawn, np.asarray(image))


def test_predict_tool_runs(tmp_path):
    import runpy
    from pathlib import Path

    tool = Path(__file__).resolve().parents[1] / "tools" / "predict.py"
    out = tmp_path / "dense.png"
    runpy.run_path(str(tool))["main"](
        [
            "--model",
            "EVA02-Tiny-16",
            "--random-init",
            "--image-size",
            "128",
            "--vocabulary",
            "cat, sky",
            "--output",
            str(out),
        ]
    )
    assert Image.open(out).size == (451, 300)
