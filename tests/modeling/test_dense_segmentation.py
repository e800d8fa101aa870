"""Training-free dense segmentation: each protocol step on hand-made cases, the segmenter's
contract, and tools/train_net.py / tools/eval_sem_seg.py end to end on a tiny dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from densevlm_d2.clip import Vocabulary, VocabularyError
from densevlm_d2.clip.text import TextSpec
from densevlm_d2.modeling.backbone.clip_vit import CLIPViTBackbone
from densevlm_d2.modeling.dense_seg import (
    class_probabilities,
    decide,
    resize_short_side,
    resized_size,
    sliding_window_logits,
    window_boxes,
)
from densevlm_d2.modeling.meta_arch import CLIPDenseSegmenter
from densevlm_d2.modeling.open_vocab import input_vocabulary
from tests.helpers import train_net

ROOT = Path(__file__).resolve().parents[2]
MEAN, STD = [122.7709383, 116.7460125, 104.09373615], [68.5005327, 66.6321579, 70.3231630]


@pytest.mark.parametrize(
    "size, short, expected",
    [
        ((375, 500), 336, (336, 448)),  # short side 336
        ((500, 375), 448, (597, 448)),  # 500 * 448 / 375 = 597.33
        ((100, 5000), 336, (41, 2048)),  # the long side caps the scale: 2048 / 5000
        ((224, 300), 0, (224, 300)),  # 0: no resize
    ],
)
def test_resized_size(size, short, expected):
    assert resized_size(*size, short, 2048) == expected


def test_resize_rounds_like_an_8bit_resize():
    image = torch.arange(12, dtype=torch.uint8).view(1, 3, 4).expand(3, 3, 4) * 20
    out = resize_short_side(image, 6, 2048)
    assert out.shape == (3, 6, 8)
    assert torch.equal(out, out.round()) and out.min() >= 0 and out.max() <= 255
    assert torch.equal(resize_short_side(image, 3), image.float())  # already the size: untouched


def test_window_boxes_by_hand():
    # 336 x 448 with 224 windows every 112 px: 2 rows x 3 columns, the last ones shifted back
    assert window_boxes(336, 448, 224, 112) == [
        (0, 224, 0, 224), (0, 224, 112, 336), (0, 224, 224, 448),
        (112, 336, 0, 224), (112, 336, 112, 336), (112, 336, 224, 448),
    ]  # fmt: skip
    # 336 x 500: columns at 0, 112, 224 and the last one shifted back to 276
    assert [b[2] for b in window_boxes(336, 500, 224, 112)][:4] == [0, 112, 224, 276]
    # an image smaller than a window is one window of its own size
    assert window_boxes(100, 150, 224, 112) == [(0, 100, 0, 150)]
    with pytest.raises(ValueError, match="positive"):
        window_boxes(10, 10, 0, 112)


@pytest.mark.parametrize("h, w", [(224, 224), (300, 449), (336, 224), (97, 500)])
def test_windows_have_one_size_and_cover_the_image(h, w):
    boxes = window_boxes(h, w, 224, 112)
    covered = torch.zeros(h, w, dtype=torch.int)
    for y1, y2, x1, x2 in boxes:
        assert (y2 - y1, x2 - x1) == (min(224, h), min(224, w))
        covered[y1:y2, x1:x2] += 1
    assert covered.min() >= 1


def _window_mean_features(images: torch.Tensor) -> torch.Tensor:
    """A dense map that is constant over each window: the window's mean colour, on a 2x2 grid."""
    mean = images.mean((2, 3))  # (B, 3)
    return mean[:, :, None, None].expand(-1, -1, images.shape[-2] // 16, images.shape[-1] // 16)


def test_overlapping_windows_are_averaged():
    # 224 x 336: two windows, x in [0, 224) and [112, 336); the left one red, the right one blue
    image = torch.zeros(3, 224, 336)
    image[0, :, :112] = 1.0
    image[2, :, 224:] = 1.0
    text = torch.eye(3)  # query c = colour channel c
    logits = sliding_window_logits(_window_mean_features, image, text, (224, 336), 224, 112)
    left = torch.nn.functional.normalize(image[:, :, :224].mean((1, 2)), dim=0)
    right = torch.nn.functional.normalize(image[:, :, 112:].mean((1, 2)), dim=0)
    torch.testing.assert_close(logits[:, 5, 50], left)  # only the left window
    torch.testing.assert_close(logits[:, 5, 150], (left + right) / 2)  # both
    torch.testing.assert_close(logits[:, 5, 300], right)  # only the right window
    one_at_a_time = sliding_window_logits(
        _window_mean_features, image, text, (224, 336), 224, 112, batch_size=1
    )
    torch.testing.assert_close(one_at_a_time, logits)
    # the averaged map is resized to the requested size; window 0 is the whole image at once
    assert sliding_window_logits(_window_mean_features, image, text, (10, 20)).shape == (3, 10, 20)
    whole = sliding_window_logits(_window_mean_features, image, text, (224, 336), window=0)
    torch.testing.assert_close(
        whole[:, 0, 0], torch.nn.functional.normalize(image.mean((1, 2)), dim=0)
    )


def test_synonyms_take_their_best_probability():
    vocab = Vocabulary.from_names(["sky, cloud", "cat"])
    assert vocab.synonym_queries() == (("sky", "cloud", "cat"), (0, 0, 1))
    with pytest.raises(VocabularyError, match=r"must not be blank; .* at index 1"):
        Vocabulary.from_names(["sky", " , "])
    logits = torch.tensor([0.2, 0.5, 0.4]).view(3, 1, 1)
    probs = class_probabilities(logits, 10.0, torch.tensor([0, 0, 1]))
    softmax = (logits * 10).softmax(0)
    torch.testing.assert_close(probs.flatten(), torch.stack([softmax[1], softmax[2]]).flatten())
    # one query per class: the softmax itself
    torch.testing.assert_close(class_probabilities(logits, 10.0), softmax)


def test_probability_threshold_turns_unsure_pixels_into_background():
    # 3 classes, background 0; pixel 0 is sure of class 1, pixel 1 is unsure (best 0.4)
    probs = torch.tensor([[0.1, 0.3], [0.8, 0.4], [0.1, 0.3]]).view(3, 1, 2)
    scores = decide(probs, background=0, prob_threshold=0.5)
    assert scores.argmax(0).flatten().tolist() == [1, 0]
    assert decide(probs).argmax(0).flatten().tolist() == [1, 1]
    with pytest.raises(ValueError, match="need a background class"):
        decide(probs, None, prob_threshold=0.5)


def test_area_threshold_suppresses_small_foreground_classes():
    # 10 pixels: class 1 wins 9, class 2 wins 1 (10% of the foreground), class 0 (background) none
    p = torch.zeros(3, 1, 10)
    p[1, 0, :9], p[2, 0, :9] = 0.7, 0.3
    p[2, 0, 9], p[1, 0, 9] = 0.6, 0.4
    assert decide(p, background=0, area_threshold=0.1).argmax(0).flatten().tolist() == [1] * 10
    assert decide(p, background=0, area_threshold=0.09).argmax(0).flatten().tolist()[9] == 2


@pytest.fixture(scope="module")
def segmenter():
    backbone = CLIPViTBackbone(model_name="EVA02-Tiny-16", text_cache_dir=None)
    return CLIPDenseSegmenter(backbone=backbone, pixel_mean=MEAN, pixel_std=STD).eval()


def test_segmenter_outputs_scores_at_the_requested_size(segmenter):
    image = torch.randint(0, 256, (3, 75, 100), dtype=torch.uint8)
    out = segmenter([{"image": image, "classes": ["sky, cloud", "cat", "dog"], "height": 150,
                      "width": 200}])  # fmt: skip
    assert out[0]["sem_seg"].shape == (3, 150, 200)
    # a vocabulary is cached with one query per synonym
    text, owner = segmenter.text_queries(["sky, cloud", "cat", "dog"])
    assert text.shape[0] == 4 and owner.tolist() == [0, 0, 1, 2]


def test_segmenter_errors_name_the_problem(segmenter):
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    with pytest.raises(ValueError, match="'classes' or the 'dataset_name'"):
        segmenter([{"image": image}])
    with pytest.raises(ValueError, match="'no_such_dataset' has no class names"):
        segmenter([{"image": image, "dataset_name": "no_such_dataset"}])
    with pytest.raises(ValueError, match="input 'classes': empty vocabulary"):
        segmenter([{"image": image, "classes": []}])
    with pytest.raises(ValueError, match=r"\(3, H, W\) RGB"):
        segmenter.segment(torch.zeros(32, 32, dtype=torch.uint8), ["cat"])
    with pytest.raises(NotImplementedError, match="training-free"):
        segmenter.train()([{"image": image, "classes": ["cat"]}])
    segmenter.eval()
    with pytest.raises(ValueError, match="one embedding per query"):
        CLIPDenseSegmenter(backbone=segmenter.backbone, pixel_mean=MEAN, pixel_std=STD,
                           text=TextSpec(synonyms="first", ensemble=False))  # fmt: skip


def test_segmenter_text_settings_come_from_its_config_node():
    from detectron2.config import get_cfg

    import densevlm_d2

    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    text = CLIPDenseSegmenter.protocol_from_config(cfg)["text"]
    assert (text.templates, text.style, text.synonyms) == (  # SCLIP's
        TextSpec(prompts="imagenet").templates, "plain", "max",
    )  # fmt: skip
    cfg.MODEL.DENSE_SEG.TEXT.SYNONYMS = "both"
    with pytest.raises(ValueError, match="MODEL.DENSE_SEG.TEXT: synonyms must be one of"):
        CLIPDenseSegmenter.protocol_from_config(cfg)


def test_vocabulary_queries_a_datasets_query_classes():
    from detectron2.data import MetadataCatalog

    from densevlm_d2.data import shipped_vocabulary
    from densevlm_d2.data.datasets.sem_seg import register_sem_seg

    def queries(inp):
        q = input_vocabulary(inp).queries
        return list(q.names), q.background_index

    voc20b = shipped_vocabulary("voc_20b")
    # VOC-20b: 59 queries; its background (scored class 20) is 39 Context queries, not one
    classes, background = queries({"dataset_name": "densevlm_voc_20b_val_sem_seg"})
    assert classes == list(voc20b.query_names) and len(classes) == 59 and background is None
    # without query_classes: the scored classes and their background
    voc21 = MetadataCatalog.get("densevlm_voc_21_val_sem_seg")
    assert queries({"dataset_name": "densevlm_voc_21_val_sem_seg"}) == (voc21.stuff_classes, 0)
    # an input's own classes come first
    inp = {"dataset_name": "densevlm_voc_20b_val_sem_seg", "classes": ["cat", "sky"]}
    assert queries(inp) == (["cat", "sky"], None)
    # a background below the surplus index is the same class in both lists: kept (queries after
    # the first two count as the last class, "other")
    register_sem_seg(
        "test_dense_seg_query_bg",
        "i",
        "g",
        ["background", "cat", "other"],
        background_index=0,
        query_classes=["background", "cat", "sky", "wall"],
    )
    assert queries({"dataset_name": "test_dense_seg_query_bg"}) == (
        ["background", "cat", "sky", "wall"],
        0,
    )
    assert input_vocabulary({"dataset_name": "test_dense_seg_query_bg"}).surplus_index == 2


# -- end to end ------------------------------------------------------------------------------------
REGISTER = """
from densevlm_d2.data.datasets.sem_seg import register_sem_seg
register_sem_seg("tiny_sem_seg_val", {images!r}, {labels!r},
                 ["background", "red thing", "blue thing"], background_index=0)
"""


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_sem_seg")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
        label = np.zeros((60, 80), np.uint8)
        label[10:30, 10:40], label[35:55, 40:70], label[0:3] = 1, 2, 255
        Image.fromarray(image).save(root / "images" / f"{i:03d}.jpg")
        Image.fromarray(label).save(root / "labels" / f"{i:03d}.png")
    register = root / "register.py"
    register.write_text(REGISTER.format(images=str(root / "images"), labels=str(root / "labels")))
    return register


TINY = ["MODEL.CLIP.MODEL_NAME", "EVA02-Tiny-16", "MODEL.CLIP.RANDOM_INIT", "True",
        "MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0", "MODEL.DENSE_SEG.SHORT_SIDE", "64",
        "MODEL.DENSE_SEG.WINDOW", "48", "MODEL.DENSE_SEG.STRIDE", "32"]  # fmt: skip


@pytest.mark.slow
def test_train_net_eval_only_writes_sem_seg_metrics(tiny_dataset, tmp_path):
    out = tmp_path / "out"
    train_net(ROOT / "configs/sem_seg/eva02_b16/voc21.yaml", "--eval-only", *TINY,
              "DATASETS.TEST", '("tiny_sem_seg_val",)', "OUTPUT_DIR", str(out),
              register=(tiny_dataset,), timeout=300)  # fmt: skip
    metrics = json.loads((out / "inference/tiny_sem_seg_val/sem_seg_metrics.json").read_text())
    assert metrics["num_images"] == 3 and metrics["dataset"] == "tiny_sem_seg_val"
    assert 0 <= metrics["mIoU"] <= 100 and 0 <= metrics["pACC"] <= 100
    assert {"IoU-background", "IoU-red thing", "IoU-blue thing", "fwIoU"} <= set(metrics)
    assert not (out / "inference/tiny_sem_seg_val/sem_seg_predictions.json").exists()


@pytest.mark.slow
def test_eval_sem_seg_prints_one_table(tiny_dataset, tmp_path):
    """Two checkpoints (EVA-CLIP and open_clip layouts of two random CLIPs) x two benchmarks."""
    weights = []
    for seed, fmt in ((0, "eva_clip"), (1, "open_clip")):
        torch.manual_seed(seed)
        clip = CLIPViTBackbone(model_name="EVA02-Tiny-16", text_cache_dir=None)
        weights.append(str(clip.save(tmp_path / f"clip{seed}.pt", fmt)))
    out = tmp_path / "table"
    cmd = [sys.executable, str(ROOT / "tools" / "eval_sem_seg.py"), "--register", str(tiny_dataset),
           "--clip", "eva02_b16", "--benchmarks", "voc21", "voc20", "--output-dir", str(out),
           "--weights", weights[0], "--weights", weights[1], *TINY,
           "DATASETS.TEST", '("tiny_sem_seg_val",)']  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((out / "summary.json").read_text())["mIoU"]
    assert list(rows) == weights
    for row in rows.values():
        assert set(row) == {"voc21", "voc20"} and all(isinstance(v, float) for v in row.values())
    assert rows[weights[0]] != rows[weights[1]]  # each checkpoint really was loaded
    assert "| weights | voc21 | voc20 |" in proc.stdout
    assert (out / "clip0.pt/voc21/inference/tiny_sem_seg_val/sem_seg_metrics.json").is_file()


@pytest.mark.slow
def test_eval_sem_seg_marks_missing_data_and_strict_stops(tmp_path):
    base = [sys.executable, str(ROOT / "tools" / "eval_sem_seg.py"), "--clip", "eva02_b16",
            "--benchmarks", "voc20", "--output-dir", str(tmp_path / "t")]  # fmt: skip
    env = {**os.environ, "DETECTRON2_DATASETS": str(tmp_path / "nothing")}
    proc = subprocess.run(
        base + TINY, capture_output=True, text=True, cwd=tmp_path, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "t" / "summary.json").read_text())["mIoU"] == {
        "random-init": {"voc20": "n/a"}
    }
    proc = subprocess.run(
        [*base, "--strict", *TINY],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env=env,
    )
    assert proc.returncode != 0
    assert "VOCdevkit" in proc.stderr  # the error names the missing folder and the layout


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "configs/sem_seg").glob("*/*.yaml")),
    ids=lambda p: p.parent.name + "/" + p.stem,
)
def test_every_benchmark_config_names_a_registered_dataset_and_valid_protocol(path):
    from detectron2.config import get_cfg
    from detectron2.data import DatasetCatalog, MetadataCatalog

    import densevlm_d2
    from densevlm_d2.clip.models import available_models
    from densevlm_d2.data import dataset_vocabulary

    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.merge_from_file(str(path))
    assert cfg.MODEL.META_ARCHITECTURE == "CLIPDenseSegmenter"
    assert cfg.MODEL.CLIP.MODEL_NAME in available_models()
    if path.stem == "Base":
        return
    (dataset,) = cfg.DATASETS.TEST
    assert dataset in DatasetCatalog.list()
    meta = MetadataCatalog.get(dataset)
    assert meta.evaluator_type == "sem_seg" and len(meta.stuff_classes) > 1
    c = cfg.MODEL.DENSE_SEG
    if c.PROB_THRESHOLD > 0 or c.AREA_THRESHOLD > 0:
        assert dataset_vocabulary(dataset).background_index is not None
    assert 0 < c.STRIDE <= c.WINDOW and c.SHORT_SIDE > 0
    assert cfg.OUTPUT_DIR.endswith(f"{path.parent.name}/{path.stem}")
