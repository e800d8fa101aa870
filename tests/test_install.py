"""The install modernises detectron2's source (tools/install_extras.py), so that the library patches
nothing in the user's process and imports in any order."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import ROOT, load_tool

install_extras = load_tool("install_extras")

# the lines of detectron2 v0.6 (and, for model_zoo, of detectron2 main) that today's libraries break
V06_FILES = {
    "data/transforms/transform.py": (
        "from PIL import Image\n\n"
        "class ExtentTransform:\n"
        "    def __init__(self, src_rect, output_size, interp=Image.LINEAR, fill=0):\n"
        "        pass\n"
    ),
    "data/build.py": (
        "import numpy as np\n"
        "histogram = np.zeros((3,), dtype=np.int)\n"
        "x = np.asarray([1], dtype=np.int64)  # not an alias: untouched\n"
    ),
    "evaluation/sem_seg_evaluation.py": (
        "import numpy as np\n"
        "acc = np.full(3, np.nan, dtype=np.float)\n"
        "ok = np.zeros(2).astype(np.bool)\n"
        "s = np.str_('x')  # not an alias: untouched\n"
    ),
    "model_zoo/model_zoo.py": (
        "import os\n"
        "from typing import Optional\n"
        "import pkg_resources\n"
        "import torch\n\n\n"
        "def get_config_file(config_path):\n"
        "    cfg_file = pkg_resources.resource_filename(\n"
        '        "detectron2.model_zoo", os.path.join("configs", config_path)\n'
        "    )\n"
        "    return cfg_file\n"
    ),
}


def _write(root: Path) -> Path:
    package = root / "detectron2"
    for rel, text in V06_FILES.items():
        (package / rel).parent.mkdir(parents=True, exist_ok=True)
        (package / rel).write_text(text)
    (package / "model_zoo" / "configs").mkdir()
    (package / "model_zoo" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    return package


def test_modernising_the_source_replaces_only_the_removed_names(tmp_path):
    package = _write(tmp_path)
    outdated = install_extras.outdated_detectron2_files(package)
    assert sorted(p.relative_to(package).as_posix() for p in outdated) == sorted(V06_FILES)
    changed = install_extras.modernize_detectron2_source(package)
    assert len(changed) == 4 and install_extras.outdated_detectron2_files(package) == []
    assert install_extras.modernize_detectron2_source(package) == []  # idempotent
    read = {rel: (package / rel).read_text() for rel in V06_FILES}
    assert "interp=Image.BILINEAR" in read["data/transforms/transform.py"]
    assert "dtype=int)" in read["data/build.py"] and "dtype=np.int64" in read["data/build.py"]
    sem = read["evaluation/sem_seg_evaluation.py"]
    assert "dtype=float)" in sem and "astype(bool)" in sem and "np.str_('x')" in sem
    assert "pkg_resources" not in read["model_zoo/model_zoo.py"].replace("no pkg_resources", "")
    # the modernised model_zoo resolves its resources with importlib.resources
    code = textwrap.dedent(
        """
        import sys; sys.path.insert(0, sys.argv[1])
        from detectron2.model_zoo.model_zoo import get_config_file
        print(get_config_file("x.yaml"))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().endswith("configs/x.yaml")


@pytest.mark.slow
def test_the_installed_detectron2_needs_no_patch():
    """Without densevlm_d2 imported first: detectron2's modules that use the removed names import
    and run with today's numpy and Pillow, and nothing named pkg_resources is needed."""
    code = textwrap.dedent(
        """
        import importlib.util, numpy as np
        import detectron2.data.transforms, detectron2.model_zoo, detectron2.data.build
        from detectron2.evaluation import SemSegEvaluator
        from detectron2.model_zoo.model_zoo import get_config_file
        assert "int" not in vars(np) and "float" not in vars(np)  # numpy >= 1.24: no aliases
        try:
            get_config_file("x.yaml")
        except RuntimeError as e:
            assert "not available in Model Zoo" in str(e)
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
    spec = __import__("importlib").util.find_spec("detectron2")
    assert install_extras.outdated_detectron2_files(Path(spec.origin).parent) == []


@pytest.mark.slow
def test_importing_the_library_patches_nothing():
    code = textwrap.dedent(
        """
        import sys, numpy as np, PIL.Image
        before = list(sys.meta_path)
        had_linear = hasattr(PIL.Image, "LINEAR")
        import densevlm_d2
        assert sys.meta_path == before, "a finder was added"
        assert "int" not in vars(np) and "float" not in vars(np) and "str" not in vars(np)
        assert hasattr(PIL.Image, "LINEAR") == had_linear
        assert "pkg_resources" not in sys.modules
        print("ok")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT)
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


@pytest.mark.slow
def test_any_import_order():
    """detectron2 first, densevlm_d2 second (the old import-order rule is gone)."""
    code = (
        "import detectron2.data.transforms, detectron2.engine, detectron2.evaluation; "
        "import densevlm_d2; print(densevlm_d2.__version__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


def test_the_lvis_wheel_is_modernised_with_its_record(tmp_path):
    """tools/install_extras.py installs the LVIS API from its wheel with numpy's removed aliases
    replaced, and the wheel's RECORD hashes still match its files."""
    import base64
    import hashlib
    import zipfile

    old = "x = np.cumsum(a).astype(dtype=np.float)\n"
    wheel = tmp_path / "lvis-0.5.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("lvis/eval.py", old)
        z.writestr("lvis/lvis.py", "import json\n")
        z.writestr("lvis-0.5.3.dist-info/RECORD", "lvis/eval.py,sha256=stale,40\n")
    out = install_extras.modernize_lvis_wheel(wheel, tmp_path / "new")
    with zipfile.ZipFile(out) as z:
        new = z.read("lvis/eval.py")
        record = z.read("lvis-0.5.3.dist-info/RECORD").decode()
        assert z.read("lvis/lvis.py") == b"import json\n"
    assert new == b"x = np.cumsum(a).astype(dtype=float)\n"
    digest = base64.urlsafe_b64encode(hashlib.sha256(new).digest()).rstrip(b"=").decode()
    assert record == f"lvis/eval.py,sha256={digest},{len(new)}\n"
    # and the installed LVIS API holds none of them
    spec = __import__("importlib").util.find_spec("lvis")
    assert spec is not None, "the LVIS API is not installed: python tools/install_extras.py"
    assert install_extras.outdated_lvis_files(Path(spec.origin).parent) == []
