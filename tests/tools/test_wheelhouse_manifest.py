"""tools/wheelhouse.py install refuses a damaged manifest.json with an error naming it."""

from __future__ import annotations

import json

import pytest

from tests.helpers import ROOT


@pytest.fixture
def wheelhouse(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tools"))  # wheelhouse.py imports install_extras
    import wheelhouse

    return wheelhouse


@pytest.mark.parametrize(
    "content, match",
    [
        ('{"files": {"a.whl": ', r"manifest.json cannot be read .*a damaged copy"),
        ("\x00\x01", r"manifest.json cannot be read"),
        ('["not", "a", "dict"]', r"manifest.json lacks \['files'"),
        ('{"files": {}}', r"manifest.json lacks \['python_version', 'packages'"),
    ],
)
def test_a_damaged_manifest_is_named(wheelhouse, tmp_path, content, match):
    (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(wheelhouse.WheelhouseError, match=match):
        wheelhouse.load_manifest(tmp_path)


def test_an_intact_manifest_still_loads(wheelhouse, tmp_path):
    (tmp_path / "a.whl").write_bytes(b"wheel")
    manifest = {
        "files": {"a.whl": wheelhouse._sha256(tmp_path / "a.whl")},
        "python_version": "3.12",
        "packages": {},
        "no_deps": [],
        "detectron2_source": "d2.tar.gz",
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert wheelhouse.load_manifest(tmp_path) == manifest
