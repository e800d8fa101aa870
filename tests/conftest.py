"""Shared fixtures. Checkpoints in the real on-disk layouts are written by the tests themselves."""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants

import densevlm_d2  # noqa: F401  (registers the backbone, meta-architectures and datasets)

DATA = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Text-embedding cache in a temporary directory, never the user's."""
    monkeypatch.setenv("DENSEVLM_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty Hugging Face hub cache, offline, and a socket that fails the test if anything
    connects."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))

    def no_network(*args, **kwargs):
        raise AssertionError("something tried the network while offline")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    return cache


def release_key_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """Key names and shapes of the EVA-CLIP release layout, read off the published model classes."""
    table = json.loads((DATA / "eva_clip_release_keys.json").read_text())[name]
    return {k: tuple(v) for k, v in table.items()}


def published_rope(grid, head_dim: int = 64, pt_seq_len: int = 16):
    """The published VisionRotaryEmbeddingFast buffers, written out independently in float64:
    per axis t = arange(n) / n * pt_seq_len, each frequency repeated twice (interleaved), rows then
    columns. ``grid`` is n (square, as published) or (rows, cols). Returns (cos, sin), each
    (rows * cols, head_dim).
    """
    rows, cols = (grid, grid) if isinstance(grid, int) else grid
    d = head_dim // 2
    inv = [1.0 / (10000 ** (i / d)) for i in range(0, d, 2)][: d // 2]
    cos = torch.empty(rows * cols, head_dim, dtype=torch.float64)
    sin = torch.empty(rows * cols, head_dim, dtype=torch.float64)
    for r in range(rows):
        for c in range(cols):
            angles = []
            for pos, n in ((r, rows), (c, cols)):
                t = pos / n * pt_seq_len
                for f in inv:
                    angles += [t * f, t * f]
            cos[r * cols + c] = torch.tensor([math.cos(a) for a in angles], dtype=torch.float64)
            sin[r * cols + c] = torch.tensor([math.sin(a) for a in angles], dtype=torch.float64)
    return cos.float(), sin.float()


def random_release_state(name: str, seed: int = 0, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """A random checkpoint with exactly the release's keys and shapes (RoPE buffers with their real
    values)."""
    shapes = release_key_shapes(name)
    g = torch.Generator().manual_seed(seed)
    rope_n = shapes["visual.rope.freqs_cos"][0]
    cos, sin = published_rope(int(round(rope_n**0.5)))
    state = {}
    for key, shape in shapes.items():
        if key.endswith("rope.freqs_cos"):
            state[key] = cos.clone().to(dtype)
        elif key.endswith("rope.freqs_sin"):
            state[key] = sin.clone().to(dtype)
        else:
            state[key] = (torch.randn(shape, generator=g) * 0.02).to(dtype)
    return state


@pytest.fixture(scope="session")
def eva_b16_release_state():
    return random_release_state("EVA02-CLIP-B-16")


@pytest.fixture(scope="session")
def eva_b16():
    """A full-size EVA02-CLIP-B/16 (random init), shared: tests must not modify it."""
    return densevlm_d2.build_clip_model("EVA02-CLIP-B-16")


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter non-trivial random values (norm weights and biases included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(
                torch.randn(p.shape, generator=g) * (0.2 if p.ndim > 1 else 0.1)
                + (1.0 if p.ndim == 1 else 0)
            )
    return model


@pytest.fixture
def tiny_eva():
    return randomize_(densevlm_d2.build_clip_model("EVA02-Tiny-16"), seed=1)


@pytest.fixture
def tiny_vit():
    return randomize_(densevlm_d2.build_clip_model("ViT-Tiny-16"), seed=2)
