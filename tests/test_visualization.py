"""Dense open-vocabulary prediction and its drawing (tools/predict.py's core) on a tiny model."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import densevlm_d2
from densevlm_d2.visualization import dense_prediction, draw_dense_prediction

# OpenCV (detectron2's Visualizer) draws; `make env` installs it, a cluster node from the
# wheelhouse may not have it (tools/wheelhouse.py), and then only the drawing tests skip.
needs_cv2 = pytest.mark.skipif(
    importlib.util.find_spec("cv2") is None, reason="drawing needs OpenCV (cv2)"
)


@pytest.fixture
def encoder(tiny_vit):
    return densevlm_d2.CLIPRegionEncoder(
        tiny_vit, "ViT-Tiny-16", image_size=96, text_cache_dir=None
    )


@pytest.fixture
def image():
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 80, 3), dtype=np.uint8))


NAMES = ["cat", "sky", "grass"]


def test_dense_prediction(encoder, image):
    classifier = encoder.text_embeddings(NAMES)
    labels = dense_prediction(encoder, image, classifier)
    assert labels.shape == (50, 80) and labels.dtype == torch.int64
    assert 0 <= labels.min() and labels.max() < 3
    # the top-left pixel takes the class of the top-left token
    with torch.no_grad():
        token = encoder.encode_dense(encoder.preprocess(image))[0, :, 0, 0]
    assert labels[0, 0] == (classifier @ token).argmax()


@needs_cv2
def test_drawing(encoder, image):
    labels = dense_prediction(encoder, image, encoder.text_embeddings(NAMES))
    drawn = draw_dense_prediction(image, labels, NAMES)
    assert drawn.shape == (50, 80, 3) and drawn.dtype == np.uint8
    assert not np.array_equal(drawn, np.asarray(image))


@pytest.mark.slow
def test_drawing_without_opencv_names_the_fix():
    code = (
        "import sys; sys.modules['cv2'] = None\n"
        "import numpy as np, torch\n"
        "from densevlm_d2.visualization import draw_dense_prediction\n"
        "image, labels = np.zeros((4, 4, 3), np.uint8), torch.zeros(4, 4, dtype=torch.long)\n"
        "draw_dense_prediction(image, labels, ['a'])"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode != 0
    assert "needs OpenCV: pip install opencv-python-headless" in run.stderr


@needs_cv2
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
