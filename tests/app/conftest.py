"""A demo folder as `make demo` leaves it, with randomly initialised demo CLIPs (the app's tests
need its layout and architecture, not trained weights)."""

from __future__ import annotations

import pytest

import densevlm_d2
from app.catalogue import DEMO_REGISTER, register_files
from tests.conftest import randomize_


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
    register_files([DEMO_REGISTER])  # the demo's CLIP architecture, EVA02-Demo-16
    root = tmp_path_factory.mktemp("demo")
    (root / "models").mkdir()
    for seed, name in enumerate(("student", "densevlm")):
        model = randomize_(densevlm_d2.build_clip_model("EVA02-Demo-16"), seed=seed)
        densevlm_d2.save_checkpoint(model, root / "models" / f"{name}.pt", "eva_clip")
    return root
