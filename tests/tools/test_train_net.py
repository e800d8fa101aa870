"""tools/train_net.py --eval-only: hand-computed numbers end to end, a tiny model, two processes."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.engine import default_argument_parser
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from PIL import Image

import densevlm_d2
from densevlm_d2.clip.text import DEFAULT_TEXT_SPEC, load_text_embeddings
from densevlm_d2.clip.vocabulary import Vocabulary
from densevlm_d2.data.datasets import register_panoptic
from densevlm_d2.modeling.backbone.clip_vit import embeddings_files
from tests.helpers import train_net
from tests.synthetic import CATEGORIES, write_toy

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "train_net.py"
CONFIG = ROOT / "configs" / "eval" / "coco_panoptic_eva02_b16.yaml"


@BACKBONE_REGISTRY.register()
class ToyColourOracle(Backbone):
    """A 'CLIP' whose token is the one-hot class of its patch's colour (black padding -> cat)."""

    def __init__(self, cfg, input_shape):
        super().__init__()
        colors = [c["color"] for c in sorted(CATEGORIES, key=lambda c: c["id"])]
        self.register_buffer("colors", torch.tensor(colors, dtype=torch.float32))
        self.patch_size = 16
        self.text_embeddings_files = embeddings_files(
            cfg.MODEL.CLIP.TEXT_EMBEDDINGS, "MODEL.CLIP.TEXT_EMBEDDINGS"
        )

    def forward(self, x):  # x: raw 0-255 pixels (PIXEL_MEAN 0, PIXEL_STD 1)
        patches = F.avg_pool2d(x, 16)
        dist = ((patches[:, None] - self.colors[None, :, :, None, None]) ** 2).sum(2)
        cls = dist.argmin(1)
        cls[patches.sum(1) < 30] = 0
        return {"dense": F.one_hot(cls, len(self.colors)).permute(0, 3, 1, 2).float()}

    def output_shape(self):
        return {"dense": ShapeSpec(channels=len(self.colors), stride=16)}

    def text_embeddings(self, vocabulary, spec=DEFAULT_TEXT_SPEC, *, grad=False):
        """The CLIPViTBackbone contract: the vocabulary's precomputed file (no text tower)."""
        vocabulary = Vocabulary.from_names(vocabulary)
        path = self.text_embeddings_files[vocabulary.source]
        return load_text_embeddings(path, vocabulary, dim=len(self.colors))


def _run_main(argv):
    ns = runpy.run_path(str(TOOL))
    return ns["main"](default_argument_parser().parse_args(argv))


def test_hand_computed_end_to_end(tmp_path):
    write_toy(str(tmp_path / "img"), str(tmp_path / "pan"), str(tmp_path / "pan.json"))
    register_panoptic(
        "test_e2e_toy",
        CATEGORIES,
        str(tmp_path / "img"),
        str(tmp_path / "pan"),
        str(tmp_path / "pan.json"),
        layout="",
    )
    emb = tmp_path / "identity.npy"
    np.save(emb, np.eye(len(CATEGORIES), dtype=np.float32))
    out = tmp_path / "out"
    results = _run_main(
        [
            "--config-file",
            str(CONFIG),
            "--eval-only",
            "MODEL.BACKBONE.NAME",
            "ToyColourOracle",
            "MODEL.DEVICE",
            "cpu",
            "MODEL.PIXEL_MEAN",
            "[0.0, 0.0, 0.0]",
            "MODEL.PIXEL_STD",
            "[1.0, 1.0, 1.0]",
            "INPUT.REGIONS.IMAGE_SIZE",
            "96",
            "DATASETS.TEST",
            "('test_e2e_toy',)",
            "MODEL.CLIP.TEXT_EMBEDDINGS",
            f"[['test_e2e_toy', '{emb}']]",
            "TEST.REGIONS.IMS_PER_BATCH",
            "2",
            "DATALOADER.NUM_WORKERS",
            "0",
            "OUTPUT_DIR",
            str(out),
        ]
    )
    rois, masks = results["rois"], results["maskpool"]
    # Boxes: every region's box is dominated by its own class, except dog F, whose annotated box
    # reaches into the padding (pooled: 0.58 cat, 0.39 dog, 0.03 grass): dogs 3/4, cats 2/2, sky
    # 2/2, grass 2/2; dog F still has dog in its top 5. The tiny cat is filtered by size.
    assert rois["thing.macc1"] == pytest.approx((100 + 75) / 2)
    assert rois["thing.macc5"] == pytest.approx(100)
    assert rois["stuff.macc1"] == pytest.approx(100) and rois["stuff.macc5"] == pytest.approx(100)
    assert rois["all.macc1"] == pytest.approx((100 + 75 + 100 + 100) / 4)
    assert rois["fg_bias"] == pytest.approx(0)
    # Masks cover whole cells: every region is right
    assert all(masks[f"{s}.macc1"] == pytest.approx(100) for s in ("thing", "stuff", "all"))
    saved = json.loads((out / "inference" / "test_e2e_toy" / "region_macc.json").read_text())
    assert saved["num_regions"] == {"thing": 6, "stuff": 4}
    assert saved["metrics"]["rois.thing.macc1"] == pytest.approx(87.5)
    dog = next(r for r in saved["per_class"] if r["class"] == "dog")
    assert dog["regions"] == 4 and dog["rois.acc1"] == pytest.approx(75)


@pytest.fixture(scope="module")
def synthetic_coco(tmp_path_factory):
    """A random COCO-panoptic-format val split with COCO's 133 categories, and tiny EVA weights."""
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    from tests.synthetic import write_panoptic_split

    root = tmp_path_factory.mktemp("datasets")
    coco = root / "coco"
    write_panoptic_split(
        str(coco / "val2017"),
        str(coco / "annotations/panoptic_val2017"),
        str(coco / "annotations/panoptic_val2017.json"),
        COCO_CATEGORIES,
        num_images=6,
        seed=3,
    )
    torch.manual_seed(0)
    weights = densevlm_d2.save_checkpoint(
        densevlm_d2.build_clip_model("EVA02-Tiny-16"), root / "tiny_eva.pt", "eva_clip"
    )
    return root, weights


def _train_net(root, weights, out, *extra):
    # one thread per process in both runs: the same floating-point kernels, so that near-tied scores
    # of the random model are ranked the same way by one process and by two
    run = train_net(
        CONFIG,
        "--eval-only",
        *extra,
        "MODEL.WEIGHTS", str(weights),
        "MODEL.CLIP.MODEL_NAME", "EVA02-Tiny-16",
        "INPUT.REGIONS.IMAGE_SIZE", "128",
        "TEST.REGIONS.TYPES", '["rois","maskpool","crops"]',
        "TEST.REGIONS.IMS_PER_BATCH", "1",
        "DATALOADER.NUM_WORKERS", "0",
        "OUTPUT_DIR", str(out),
        datasets=root,
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )  # fmt: skip
    path = out / "inference" / "densevlm_coco_panoptic_val" / "region_macc.json"
    return json.loads(path.read_text()), run.stdout + run.stderr


@pytest.mark.slow
def test_tiny_model_one_and_two_processes_agree(synthetic_coco, tmp_path):
    root, weights = synthetic_coco
    one, log = _train_net(root, weights, tmp_path / "one")
    assert "Region mean accuracy" in log and "| rois" in log and "| crops" in log
    assert "eva_clip-layout CLIP checkpoint" in log  # MODEL.WEIGHTS read as a raw CLIP file
    two, log2 = _train_net(root, weights, tmp_path / "two", "--num-gpus", "2", "--dist-url", "auto")
    assert "World size: 2" in log2
    assert one["num_images"] == two["num_images"] == 6
    assert one["num_regions"] == two["num_regions"]
    assert one["metrics"] == two["metrics"]
    assert one["per_class"] == two["per_class"]


@pytest.mark.slow
def test_tiny_recipe_trains_evaluates_and_exports(synthetic_coco, tmp_path):
    """configs/coco/tiny_densevlm_cpu.yaml through train_net.py: trains, evaluates the blended
    weights on the registered COCO panoptic val split, exports the student in both layouts."""
    root, weights = synthetic_coco
    images = root / "coco" / "train2017"
    images.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        arr = rng.integers(0, 255, (50 + 10 * i, 70, 3), dtype=np.uint8)
        Image.fromarray(arr).save(images / f"{i:012d}.jpg")
    out = tmp_path / "tiny"
    run = train_net(
        ROOT / "configs" / "coco" / "tiny_densevlm_cpu.yaml",
        "MODEL.CLIP.CHECKPOINT", str(weights),
        "MODEL.DENSEVLM.TEACHER.CHECKPOINT", str(weights),
        "OUTPUT_DIR", str(out),
        datasets=root,
        timeout=900,
    )  # fmt: skip
    log = run.stdout + run.stderr
    assert "training DenseVLM for 4 iterations" in log and "Region mean accuracy" in log
    metrics = json.loads(
        (out / "inference" / "densevlm_coco_panoptic_val" / "region_macc.json").read_text()
    )["metrics"]
    assert "rois.thing.macc1" in metrics and "maskpool.stuff.macc5" in metrics
    for fmt in ("eva_clip", "open_clip"):
        clip = densevlm_d2.build_clip_model("EVA02-Tiny-16")
        densevlm_d2.load_checkpoint(clip, out / f"clip_final_{fmt}.pt")
    # the exported file holds the blended weights: not the initial ones
    initial = densevlm_d2.build_clip_model("EVA02-Tiny-16")
    densevlm_d2.load_checkpoint(initial, weights)
    key = "visual.trunk.blocks.0.mlp.fc2.weight"
    assert not torch.equal(clip.state_dict()[key], initial.state_dict()[key])
