"""On a GPU: the training steps under float16 (gradient scaler) and bfloat16 autocast, features
against the CPU, checkpoints saved from CUDA, DistributedDataParallel over NCCL with the detector's
SyncBN, and the fused attention path. Skipped (not failed) where CUDA is missing."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.data import DatasetCatalog
from detectron2.utils.events import EventStorage

import densevlm_d2
from densevlm_d2.data.mappers import RegionTrainMapper
from densevlm_d2.engine import Trainer
from densevlm_d2.engine.amp_step import AMPTrainStep
from tests.detection.test_fvit import batch as fvit_batch
from tests.detection.test_fvit import tiny_cfg as fvit_cfg
from tests.detection.test_fvit import world as fvit_world  # noqa: F401  (fixture)
from tests.engine.test_training import _cfg, world  # noqa: F401  (fixture)

# DENSEVLM_CUDA_TESTS_DEVICE=cpu runs the device-independent parts on the CPU (a dry run of this
# file where no GPU is available); the NCCL and attention-kernel tests need CUDA itself.
DEVICE = os.environ.get("DENSEVLM_CUDA_TESTS_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(
    DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU"
)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

PRECISIONS = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def _run_steps(model, optimizer, data, precision: str, steps: int = 12) -> list[float]:
    """``steps`` AMP steps on one fixed batch; the total loss of each."""
    step = AMPTrainStep(model, iter([data] * steps), optimizer, True, PRECISIONS[precision])
    assert (step.grad_scaler is not None) == (precision == "float16")
    totals = []
    with EventStorage(0) as storage:
        step.storage = storage
        for i in range(steps):
            step.iter = storage.iter = i
            step.run_step()
            totals.append(storage.latest()["total_loss"][0])
    return totals


@pytest.mark.slow
@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("arch", ["DenseVLM", "CLIPSelf"])
def test_region_alignment_steps_under_amp(world, arch, precision):  # noqa: F811
    cfg = _cfg(world, arch, **{"MODEL.DEVICE": DEVICE, "MODEL.DENSEVLM.THRESHOLD": 0.0,
                               "SOLVER.BASE_LR": 1e-3})  # fmt: skip
    model = Trainer.build_model(cfg).train()
    optimizer = Trainer.build_optimizer(cfg, model)
    assert bool(optimizer.defaults["fused"]) == DEVICE.startswith("cuda")  # fused AdamW on CUDA
    mapper = RegionTrainMapper(cfg, with_crops=model.needs_crops)
    data = [mapper(d) for d in DatasetCatalog.get(cfg.DATASETS.TRAIN[0])[:2]]
    totals = _run_steps(model, optimizer, data, precision)
    assert all(np.isfinite(totals)) and totals[-1] < totals[0], totals


@pytest.mark.slow
@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_fvit_steps_under_amp(fvit_world, precision):  # noqa: F811
    cfg = fvit_cfg("MODEL.DEVICE", DEVICE, "SOLVER.AMP.ENABLED", "True",
                   "SOLVER.AMP.PRECISION", precision)  # fmt: skip
    model = Trainer.build_model(cfg).train()
    optimizer = Trainer.build_optimizer(cfg, model)
    totals = _run_steps(model, optimizer, fvit_batch(fvit_world, n=2), precision, steps=10)
    assert all(np.isfinite(totals)) and totals[-1] < totals[0], totals


@torch.no_grad()
def test_features_on_cuda_match_the_cpu(tiny_eva):
    enc_cpu = densevlm_d2.CLIPRegionEncoder(tiny_eva, "EVA02-Tiny-16", 128, text_cache_dir=None)
    x = torch.randn(2, 3, 128, 128)
    boxes = [torch.tensor([[0.0, 0, 64, 64], [32, 16, 120, 100]])] * 2
    masks = [torch.rand(3, 8, 8) > 0.5] * 2
    ref = enc_cpu.encode_regions(x, boxes=boxes, masks=masks)
    dense_ref = enc_cpu.encode_dense(x)
    enc = enc_cpu.to(DEVICE)
    out = enc.encode_regions(x, boxes=boxes, masks=masks)
    dense = enc.encode_dense(x)
    tokens = dense.flatten(2).transpose(1, 2).flatten(0, 1).cpu()
    tokens_ref = dense_ref.flatten(2).transpose(1, 2).flatten(0, 1)
    for got, want in (
        (tokens, tokens_ref),
        (out["boxes"], ref["boxes"]),
        (out["masks"], ref["masks"]),
    ):
        assert F.cosine_similarity(got.float().cpu(), want, dim=-1).min() >= 0.999
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        bf16 = enc.encode_dense(x).float().cpu()
    # bfloat16 keeps 8 bits of mantissa: tokens agree to a cosine of 0.99 (stated bound)
    assert F.cosine_similarity(bf16.flatten(2), dense_ref.flatten(2), dim=1).min() >= 0.99


def test_checkpoint_round_trip_from_cuda(tiny_eva, tmp_path):
    model = tiny_eva.to(DEVICE)
    for fmt in ("eva_clip", "open_clip"):
        path = densevlm_d2.save_checkpoint(model, tmp_path / f"{fmt}.pt", fmt)
        again = densevlm_d2.build_clip_model("EVA02-Tiny-16")
        densevlm_d2.load_checkpoint(again, path)  # strict
        for k, v in again.state_dict().items():
            assert torch.equal(v, model.state_dict()[k].cpu()), k


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


@needs_cuda
def test_ddp_over_nccl_and_syncbn(fvit_world):  # noqa: F811
    """World size 1 over NCCL: the detector (SyncBN in its pyramid, FPN and box head) trains a step
    inside DistributedDataParallel."""
    import torch.distributed as dist
    from detectron2.engine import create_ddp_model
    from detectron2.utils import comm

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        if hasattr(comm, "create_local_process_group"):  # detectron2 main
            comm.create_local_process_group(1)
        cfg = fvit_cfg("MODEL.DEVICE", "cuda", "MODEL.FVIT.PYRAMID_NORM", "SyncBN",
                       "MODEL.FPN.NORM", "SyncBN", "MODEL.ROI_BOX_HEAD.NORM", "SyncBN")  # fmt: skip
        model = Trainer.build_model(cfg).cuda().train()
        assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
        ddp = create_ddp_model(model, device_ids=[0], broadcast_buffers=False)
        optimizer = Trainer.build_optimizer(cfg, model)
        with EventStorage(0):
            losses = ddp(fvit_batch(fvit_world, n=2))
        sum(losses.values()).backward()
        optimizer.step()
        assert all(torch.isfinite(v) for v in losses.values())
    finally:
        dist.destroy_process_group()


@needs_cuda
def test_fused_attention_is_used(tiny_eva):
    """timm's Eva blocks run torch's scaled_dot_product_attention (flash / memory-efficient kernels
    on CUDA), not the explicit softmax fallback."""
    blocks = tiny_eva.visual.trunk.blocks
    assert all(b.attn.fused_attn for b in blocks)
    calls = []
    real = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(args[0].device.type)
        return real(*args, **kwargs)

    F.scaled_dot_product_attention = spy
    try:
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            densevlm_d2.CLIPRegionEncoder(tiny_eva.cuda(), "EVA02-Tiny-16", 64).encode_dense(
                torch.randn(1, 3, 64, 64)
            )
    finally:
        F.scaled_dot_product_attention = real
    assert calls and set(calls) == {"cuda"}
