"""tools/wheelhouse.py without network: what the wheelhouse would hold for a node that has its own
torch and torchvision, requirement markers evaluated for the node's Python, and the installer's
refusals (no manifest, a damaged or missing file, another Python). The full build and offline
install into a fresh prefix over a stock torch is `make wheelhouse-check` (docs/gpu.md)."""

from __future__ import annotations

import hashlib
import json
import sys
from importlib import metadata
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"


@pytest.fixture
def wheelhouse(monkeypatch):
    monkeypatch.syspath_prepend(str(TOOLS))
    import wheelhouse

    return wheelhouse


def test_plan_holds_what_a_stock_torch_node_lacks(wheelhouse):
    plan = wheelhouse.plan("3.12")
    for name in ("open-clip-torch", "timm", "huggingface-hub", "safetensors", "fvcore", "iopath",
                 "pycocotools", "matplotlib", "yacs", "tensorboard", "omegaconf", "pytest",
                 "panopticapi-lite"):  # fmt: skip
        assert plan[name] == metadata.version(name), name  # the versions tested here
    # the node's torch/torchvision bring these; opencv is optional; the rest is not imported
    left_out = (
        "torch torchvision numpy pillow sympy jinja2 filelock opencv-python-headless black "
        "hydra-core ruff pandas webdataset"
    ).split()
    for name in left_out:
        assert name not in plan, name


def _fake_dist(tmp_path, requires):
    info = tmp_path / "fake-1.0.dist-info"
    info.mkdir()
    lines = ["Metadata-Version: 2.1", "Name: fake", "Version: 1.0"]
    (info / "METADATA").write_text("\n".join(lines + [f"Requires-Dist: {r}" for r in requires]))
    return metadata.PathDistribution(info)


def test_markers_are_evaluated_for_the_target_python(wheelhouse, tmp_path):
    dist = _fake_dist(tmp_path, ['tomli; python_version < "3.11"', "plain",
                                 'setuptools; python_version >= "3.12"', 'fast; extra == "speed"',
                                 'winonly; sys_platform == "win32"'])  # fmt: skip

    def names(version, extras=()):
        return sorted(r.name for r in wheelhouse._requirements(dist, version, extras))

    assert names("3.10") == ["plain", "tomli"]
    assert names("3.12") == ["plain", "setuptools"]
    assert names("3.12", ("speed",)) == ["fast", "plain", "setuptools"]


def test_a_requirement_missing_here_is_named(wheelhouse):
    with pytest.raises(wheelhouse.WheelhouseError, match="no-such-package-xyz"):
        wheelhouse.closure(["no-such-package-xyz"], "3.12")


def test_build_refuses_bad_version_and_used_folder(wheelhouse, tmp_path):
    with pytest.raises(wheelhouse.WheelhouseError, match="look like 3.12"):
        wheelhouse.build("312", tmp_path / "new")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "old.whl").write_bytes(b"")
    with pytest.raises(wheelhouse.WheelhouseError, match="not empty"):
        wheelhouse.build("3.12", tmp_path / "used")


def _house(tmp_path, python_version=None, files=None):
    house = tmp_path / "house"
    house.mkdir()
    files = {"a-1.0-py3-none-any.whl": b"wheel bytes"} if files is None else files
    for name, data in files.items():
        (house / name).write_bytes(data)
    manifest = {
        "python_version": python_version or "{}.{}".format(*sys.version_info[:2]),
        "packages": {"a": "1.0"}, "no_deps": [], "detectron2_source": "d2.tar.gz",
        "files": {n: hashlib.sha256(d).hexdigest() for n, d in files.items()},
    }  # fmt: skip
    (house / "manifest.json").write_text(json.dumps(manifest))
    return house


def test_install_refuses_what_it_cannot_trust(wheelhouse, tmp_path):
    with pytest.raises(wheelhouse.WheelhouseError, match="has no manifest.json"):
        wheelhouse.install(tmp_path)
    house = _house(tmp_path)
    (house / "a-1.0-py3-none-any.whl").write_bytes(b"truncated")
    with pytest.raises(wheelhouse.WheelhouseError, match="does not match its sha256"):
        wheelhouse.install(house)
    (house / "a-1.0-py3-none-any.whl").unlink()
    with pytest.raises(wheelhouse.WheelhouseError, match="listed in the manifest but missing"):
        wheelhouse.install(house)


def test_install_refuses_another_python(wheelhouse, tmp_path):
    house = _house(tmp_path, python_version="3.99")
    with pytest.raises(wheelhouse.WheelhouseError, match="for Python 3.99; this is Python 3"):
        wheelhouse.install(house)
