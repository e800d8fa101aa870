"""F-ViT in detectron2: score fusion, text-classifier loss, backbone shapes, training with a falling
loss, novel-class inference, the backbone in a stock Mask R-CNN config, tools/train_net.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_backbone, build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

import demo.register  # noqa: F401  (the demo's model EVA02-Demo-16 and datasets)
import densevlm_d2
from demo.world import NOVEL_THINGS, THINGS, WorldSpec, write_world
from densevlm_d2 import set_vocabulary
from densevlm_d2.engine import Trainer
from densevlm_d2.modeling import fuse_scores
from densevlm_d2.modeling.backbone import CLIPFPN
from tests.helpers import DEMO_REGISTER, train_net

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "demo" / "fvit.yaml"
BASE = [t for t in THINGS if t not in NOVEL_THINGS]


@pytest.fixture(autouse=True)
def _event_storage():
    with EventStorage(0):  # detectron2's heads log training statistics
        yield


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("d2data")
    write_world(
        str(root / "demo_world"), WorldSpec(seed=2, num_train=12, num_val=4), progress=False
    )
    from densevlm_d2.data.datasets.ov_coco import register_ov_coco_instances

    world = root / "demo_world"
    for name, split, file in (
        ("test_fvit_train_base", "train", "instances_train_base.json"),
        ("test_fvit_val", "val", "instances_val.json"),
    ):
        if name not in DatasetCatalog.list():
            register_ov_coco_instances(name, str(world / file), str(world / split), NOVEL_THINGS)
    return root


def tiny_cfg(*opts):
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.merge_from_file(str(TINY))
    cfg.merge_from_list(
        ["DATASETS.TRAIN", "('test_fvit_train_base',)", "DATASETS.TEST", "('test_fvit_val',)"]
        + list(opts)
    )
    return cfg


def batch(world, split="train", n=2):
    from densevlm_d2.data.mappers import build_detection_mapper

    cfg = tiny_cfg()
    mapper = build_detection_mapper(cfg, split == "train")
    name = "test_fvit_train_base" if split == "train" else "test_fvit_val"
    return [mapper(d) for d in DatasetCatalog.get(name)[:n]]


def test_fuse_scores_hand_computed():
    det = torch.tensor([[0.5, 0.3, 0.2]])
    vlm = torch.tensor([[0.2, 0.6, 0.2]])
    novel = torch.tensor([False, True, False])  # the last column is background: fused as base
    fused = fuse_scores(det, vlm, novel, clip_weight_base=0.1, clip_weight_novel=0.8)
    # 0.5^0.9 * 0.2^0.1, 0.3^0.2 * 0.6^0.8, 0.2^0.9 * 0.2^0.1 (computed with bc -l)
    assert torch.allclose(fused, torch.tensor([[0.4562217683, 0.5223303380, 0.2]]), atol=1e-7)
    with pytest.raises(ValueError, match="shapes disagree"):
        fuse_scores(det, vlm[:, :2], novel, 0.1, 0.8)


def test_text_classifier_loss_masks_novel_and_weights_background(world):
    model = Trainer.build_model(tiny_cfg())
    predictor = model.roi_heads.box_predictor
    assert predictor.class_names == list(THINGS)
    assert predictor.novel.tolist() == [t in NOVEL_THINGS for t in THINGS] + [False]
    assert predictor.class_weights.tolist() == pytest.approx([1, 1, 1, 1, 0, 0, 0.6])
    logits = torch.tensor(
        [[2.0, 0.5, 0.0, 1.0, 3.0, -1.0, 0.2], [0.1, 1.5, 0.3, 0.0, 2.0, 2.0, 1.0]]
    )
    gt = torch.tensor([1, 6])  # a "box", background
    proposals = []
    for i in range(2):
        inst = Instances((64, 64))
        inst.proposal_boxes = Boxes(torch.tensor([[0.0, 0, 10, 10]]))
        inst.gt_boxes = Boxes(torch.tensor([[0.0, 0, 10, 10]]))
        inst.gt_classes = gt[i : i + 1]
        proposals.append(inst)
    losses = predictor.losses((logits, torch.zeros(2, 4)), proposals)
    keep = [0, 1, 2, 3, 6]  # ring (4) and cross (5) never compete
    ce0 = -(logits[0, 1] - torch.logsumexp(logits[0, keep], 0))
    ce1 = -(logits[1, 6] - torch.logsumexp(logits[1, keep], 0))
    assert losses["loss_cls"].item() == pytest.approx(
        ((1.0 * ce0 + 0.6 * ce1) / 2).item(), rel=1e-6
    )
    assert losses["loss_box_reg"].item() == pytest.approx(0.0, abs=1e-7)


def test_backbone_outputs_power_of_two_strides(world):
    cfg = tiny_cfg()
    model = build_model(cfg)
    backbone = model.backbone
    assert isinstance(backbone, CLIPFPN)
    shapes = backbone.output_shape()
    assert {k: v.stride for k, v in shapes.items()} == {
        "p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64, "clip_dense": 16}  # fmt: skip
    x = torch.randn(2, 3, 128, 96)
    out = backbone(x)
    # the input is padded to the PAD_TO square (160) before the ViT
    assert out["p2"].shape == (2, 64, 40, 40) and out["p6"].shape == (2, 64, 3, 3)
    assert out["clip_dense"].shape == (2, 128, 10, 10)
    assert torch.allclose(out["clip_dense"].norm(dim=1), torch.ones(2, 10, 10), atol=1e-5)
    # the CLIP ViT is frozen; the pyramid, FPN and heads train
    assert not any(p.requires_grad for p in backbone.bottom_up.clip_backbone.parameters())
    assert all(p.requires_grad for p in backbone.bottom_up.pyramid.parameters())


def test_token_stride_resizes_the_canvas_for_other_patch_sizes(world):
    # a 16-px patch treated as covering 32 canvas pixels: the ViT sees the canvas at half size
    cfg = tiny_cfg("MODEL.FVIT.TOKEN_STRIDE", "32", "MODEL.FVIT.PAD_TO", "256")
    backbone = build_backbone(cfg)
    out = backbone(torch.randn(1, 3, 256, 256))
    # FPN names levels by stride: p3 (8) ... p7 (128)
    assert backbone.output_shape()["p3"].stride == 8 and out["p3"].shape[-2:] == (32, 32)
    assert out["clip_dense"].shape[-2:] == (8, 8)
    with pytest.raises(ValueError, match="PAD_TO"):
        backbone(torch.randn(1, 3, 320, 256))


@pytest.mark.slow
def test_training_loss_falls(world):
    import random

    random.seed(0)
    np.random.seed(0)  # detectron2's augmentations draw from numpy's global generator
    torch.manual_seed(0)
    cfg = tiny_cfg("SOLVER.BASE_LR", "2e-3")
    model = Trainer.build_model(cfg)
    optimizer = Trainer.build_optimizer(cfg, model)
    model.train()
    data = batch(world, "train", n=2)
    losses = []
    for _ in range(12):
        loss = sum(model(data).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
    # the frozen CLIP did not move
    clip = model.backbone.bottom_up.clip_backbone.model
    assert clip.visual.trunk.blocks[0].attn.q_proj.weight.grad is None


def test_inference_with_novel_names_never_seen_in_training(world):
    cfg = tiny_cfg("MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0")
    model = Trainer.build_model(cfg).eval()
    names = [
        "ring",
        "cross",
        "ball",
        "a striped flag",
    ]  # ring/cross novel; the flag not in the world
    set_vocabulary(model, names)
    predictor = model.roi_heads.box_predictor
    assert predictor.novel.tolist() == [True, True, False, True, False]
    assert model.roi_heads.num_classes == 4
    with torch.no_grad():
        out = model(batch(world, "val", n=2))
    assert len(out) == 2
    for o in out:
        inst = o["instances"]
        assert len(inst) > 0 and inst.pred_classes.max() < len(names)
        assert inst.pred_boxes.tensor.shape[1] == 4
    classes = torch.cat([o["instances"].pred_classes for o in out]).tolist()
    assert {0, 1, 3} & set(classes)  # boxes labelled with names the detector never trained on
    with pytest.raises(ValueError, match="must not repeat names"):
        set_vocabulary(model, ["ring", "ring"])


def test_fusion_changes_novel_scores_only_through_the_clip_map(world):
    base_cfg = tiny_cfg("MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0")
    torch.manual_seed(0)
    fused_model = Trainer.build_model(base_cfg).eval()
    data = batch(world, "val", n=1)
    images = fused_model.preprocess_image(data)
    with torch.no_grad():
        feats = fused_model.backbone(images.tensor)
        proposals, _ = fused_model.proposal_generator(images, feats)
        boxes = [p.proposal_boxes for p in proposals]
        rh = fused_model.roi_heads
        logits, deltas = rh.box_predictor(
            rh.box_head(rh.box_pooler([feats[f] for f in rh.box_in_features], boxes))
        )
        region = rh.clip_pooler(feats["clip_dense"], boxes)
        vlm = region @ rh.box_predictor.class_embeddings.T * 75.0
        (plain,) = rh.box_predictor.predict_probs((logits, deltas), proposals)
        (fused,) = rh.box_predictor.predict_probs((logits, deltas, vlm), proposals)
    expected = fuse_scores(plain, vlm.softmax(-1), rh.box_predictor.novel, 0.1, 0.8)
    assert torch.allclose(fused, expected, atol=1e-6)
    assert not torch.allclose(fused, plain)


STOCK_MASK_RCNN = [
    # detectron2's Base-RCNN-FPN.yaml / mask_rcnn_R_50_FPN_1x.yaml values, backbone and box
    # classifier swapped
    "MODEL.META_ARCHITECTURE", "GeneralizedRCNN",
    "MODEL.MASK_ON", "True",
    "MODEL.ANCHOR_GENERATOR.SIZES", "[[32], [64], [128], [256], [512]]",
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "[[0.5, 1.0, 2.0]]",
    "MODEL.RPN.IN_FEATURES", "['p2', 'p3', 'p4', 'p5', 'p6']",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "2000",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "1000",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "1000",
    "MODEL.RPN.POST_NMS_TOPK_TEST", "1000",
    "MODEL.ROI_HEADS.IN_FEATURES", "['p2', 'p3', 'p4', 'p5']",
    "MODEL.ROI_BOX_HEAD.NAME", "FastRCNNConvFCHead",
    "MODEL.ROI_BOX_HEAD.NUM_FC", "2",
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", "7",
    "MODEL.ROI_MASK_HEAD.NAME", "MaskRCNNConvUpsampleHead",
    "MODEL.ROI_MASK_HEAD.NUM_CONV", "4",
    "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION", "14",
    "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK", "True",
]  # fmt: skip


@pytest.mark.slow
def test_backbone_in_a_stock_mask_rcnn_config(world):
    # start from detectron2's defaults, not from this project's F-ViT configs
    cfg = densevlm_d2.add_densevlm_config(get_cfg())
    cfg.merge_from_list(STOCK_MASK_RCNN + [
        "MODEL.DEVICE", "cpu",
        "MODEL.BACKBONE.NAME", "build_clip_fpn_backbone",
        "MODEL.CLIP.MODEL_NAME", "EVA02-Demo-16",
        "MODEL.FVIT.BLOCKS", "[0, 1, 2, 3]",
        "MODEL.FVIT.PAD_TO", "160",
        "MODEL.TEXT_CLASSIFIER.SCORE_FUSION.ENABLED", "False",
        "MODEL.FPN.IN_FEATURES", "['s2', 's3', 's4', 's5']",
        "MODEL.ROI_HEADS.NAME", "OpenVocabROIHeads",
        "MODEL.ROI_HEADS.NUM_CLASSES", "6",
        "INPUT.FORMAT", "RGB",
        "INPUT.MASK_FORMAT", "bitmask",
        "DATASETS.TRAIN", "('test_fvit_masks',)",
    ])  # fmt: skip
    world_dir = world / "demo_world"
    if "test_fvit_masks" not in DatasetCatalog.list():
        from densevlm_d2.data.datasets.ov_coco import register_ov_coco_instances

        register_ov_coco_instances(
            "test_fvit_masks", str(world_dir / "instances_train.json"), str(world_dir / "train"), ()
        )
    model = Trainer.build_model(cfg)
    assert type(model.roi_heads).__name__ == "OpenVocabROIHeads" and model.roi_heads.mask_on
    # masks from the panoptic PNGs of the world, as polygons-free bitmasks
    from panopticapi.utils import rgb2id
    from PIL import Image

    pan = json.loads((world_dir / "panoptic_train.json").read_text())
    data = batch(world, "train", n=2)
    for d, ann in zip(data, pan["annotations"], strict=False):
        from detectron2.structures import BitMasks

        inst = d["instances"]
        # a box-shaped mask per instance at the mapped image size is enough for the loss
        h, w = d["image"].shape[-2:]
        masks = torch.zeros(len(inst), h, w, dtype=torch.bool)
        for k, b in enumerate(inst.gt_boxes.tensor.round().int().tolist()):
            masks[k, b[1] : b[3], b[0] : b[2]] = True
        inst.gt_masks = BitMasks(masks)
        assert rgb2id(np.asarray(Image.open(world_dir / "panoptic_train" / ann["file_name"]))).any()
    model.train()
    losses = model(data)
    assert {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    set_vocabulary(model, ["kite", "sailing boat"])
    cfg_thresh = model.roi_heads.box_predictor
    cfg_thresh.test_score_thresh = 0.0
    with torch.no_grad():
        out = model(batch(world, "val", n=1))[0]["instances"]
    assert out.has("pred_masks") and out.pred_classes.max() < 2


@pytest.mark.slow
def test_train_net_tiny_recipe_trains_and_reports_ap50(world, tmp_path):
    out = tmp_path / "out"
    train_net(
        TINY, "SOLVER.MAX_ITER", "4", "OUTPUT_DIR", out, datasets=world, register=(DEMO_REGISTER,)
    )
    assert (out / "model_final.pth").is_file()
    log = (out / "log.txt").read_text()
    assert "bbox AP50: base" in log
    results = torch.load(
        out / "inference" / "densevlm_demo_world_det_val" / "instances_predictions.pth",
        weights_only=False,
    )
    assert len(results) == 4
    # evaluation only, from the trained weights
    weights = out / "model_final.pth"
    proc = train_net(
        TINY, "--eval-only", "MODEL.WEIGHTS", weights, "OUTPUT_DIR", tmp_path / "ev",
        datasets=world, register=(DEMO_REGISTER,),
    )  # fmt: skip
    assert (
        "AP50-novel" in proc.stdout + proc.stderr
        or "novel" in (tmp_path / "ev" / "log.txt").read_text()
    )


def test_any_clip_checkpoint_layout_is_the_backbone(world, tmp_path):
    from densevlm_d2.clip import build_clip_model, save_checkpoint

    torch.manual_seed(3)
    clip = build_clip_model("EVA02-Demo-16")
    for fmt in ("eva_clip", "open_clip"):
        path = save_checkpoint(clip, tmp_path / f"clip_{fmt}.pt", fmt)
        backbone = build_backbone(tiny_cfg("MODEL.CLIP.CHECKPOINT", str(path)))
        loaded = backbone.bottom_up.clip_backbone.model.state_dict()
        for key, value in clip.state_dict().items():
            assert torch.equal(loaded[key], value), (fmt, key)
    bad = tmp_path / "wrong.pt"
    torch.save({"state_dict": {"visual.nothing": torch.zeros(1)}}, bad)
    with pytest.raises(ValueError, match="unrecognised CLIP checkpoint layout"):
        build_backbone(tiny_cfg("MODEL.CLIP.CHECKPOINT", str(bad)))
    state = torch.load(tmp_path / "clip_open_clip.pt", weights_only=True)
    state = state.get("state_dict", state)
    state.pop(sorted(k for k in state if k.startswith("visual."))[0])
    torch.save(state, bad)
    with pytest.raises(densevlm_d2.CheckpointMismatchError):
        build_backbone(tiny_cfg("MODEL.CLIP.CHECKPOINT", str(bad)))


def write_ov_coco_layout(root: Path, world_dir: Path) -> None:
    """The documented OV-COCO layout (coco/{train,val}2017, coco/annotations/*_ovcoco*.json) with
    the 65 real OV-COCO categories, filled with two world images each."""
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    from densevlm_d2.data.datasets.ov_coco import OV_COCO_CLASSES, prepare_ov_coco_json

    ids = {c["name"]: c["id"] for c in COCO_CATEGORIES if c["isthing"]}
    # the world's things as OV-COCO classes (tent -> umbrella and cross -> cake are novel)
    names = ["orange", "suitcase", "umbrella", "kite", "donut", "cake"]
    world_to_coco = {i + 1: ids[n] for i, n in enumerate(names)}
    ann_dir = root / "coco" / "annotations"
    ann_dir.mkdir(parents=True)
    for split, out, keep in (("train", "instances_train2017_ovcoco_base.json", "base"),
                             ("val", "instances_val2017_ovcoco.json", "all")):  # fmt: skip
        data = json.loads((world_dir / f"instances_{split}.json").read_text())
        images = data["images"][:2]
        (root / "coco" / f"{split}2017").mkdir(parents=True)
        for im in images:
            src = world_dir / split / im["file_name"]
            (root / "coco" / f"{split}2017" / im["file_name"]).write_bytes(src.read_bytes())
        keep_ids = {im["id"] for im in images}
        anns = [dict(a, category_id=world_to_coco[a["category_id"]]) for a in data["annotations"]
                if a["image_id"] in keep_ids]  # fmt: skip
        cats = [{"id": c["id"], "name": c["name"]} for c in COCO_CATEGORIES if c["isthing"]]
        full = ann_dir / f"instances_{split}2017.json"
        full.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
        prepare_ov_coco_json(str(full), str(ann_dir / out), keep)
    assert len(OV_COCO_CLASSES) == 65


@pytest.mark.slow
def test_ovcoco_recipe_runs_in_the_documented_layout(world, tmp_path):
    """configs/ovcoco/fvit_eva02_b16.yaml through tools/train_net.py on two images per split in the
    documented OV-COCO layout (65 real categories, base boxes only for training), one iteration then
    the OV-COCO evaluation. The CLIP is swapped for the small EVA02-Demo-16 to keep the test short
    (B/16's text tower needs minutes on 2 CPU cores for 65 names x 63 templates)."""
    data_root = tmp_path / "data"
    write_ov_coco_layout(data_root, world / "demo_world")
    train_net(
        ROOT / "configs" / "ovcoco" / "fvit_eva02_b16.yaml",
        "MODEL.DEVICE", "cpu", "MODEL.CLIP.MODEL_NAME", "EVA02-Demo-16",
        "MODEL.CLIP.CHECKPOINT", "", "MODEL.CLIP.RANDOM_INIT", "True",
        "MODEL.FVIT.BLOCKS", "[0, 1, 2, 3]", "MODEL.ROI_BOX_HEAD.FC_DIM", "128",
        "SOLVER.AMP.ENABLED", "False",
        "INPUT.LSJ.IMAGE_SIZE", "256", "MODEL.FVIT.PAD_TO", "256", "SOLVER.IMS_PER_BATCH", "1",
        "SOLVER.MAX_ITER", "1", "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(tmp_path / "out"),
        datasets=data_root, timeout=900, register=(DEMO_REGISTER,),
    )  # fmt: skip
    log = (tmp_path / "out" / "log.txt").read_text()
    assert "bbox AP50: base" in log and "densevlm_ovcoco_val" in log


def test_missing_ovcoco_files_name_the_layout(monkeypatch, tmp_path):
    from densevlm_d2.data.datasets import DatasetLayoutError
    from densevlm_d2.data.datasets.ov_coco import OV_COCO_NOVEL, register_ov_coco_instances

    register_ov_coco_instances(
        "test_fvit_missing", str(tmp_path / "coco" / "annotations" / "x.json"),
        str(tmp_path / "coco" / "train2017"), OV_COCO_NOVEL, "LAYOUT-TEXT",
    )  # fmt: skip
    with pytest.raises(DatasetLayoutError, match="instances json not found(.|\\n)*LAYOUT-TEXT"):
        DatasetCatalog.get("test_fvit_missing")
    from densevlm_d2.data.datasets.ov_coco import OV_COCO_LAYOUT

    assert "prepare_ov_coco" in OV_COCO_LAYOUT and "instances_val2017_ovcoco.json" in OV_COCO_LAYOUT
