#!/usr/bin/env python
"""Install what ``make env`` cannot get from PyPI as such: detectron2 and panopticapi (not on
PyPI under their own names), the official LVIS API (whose PyPI metadata would replace OpenCV), and
the Chromium browser and driver that the app's browser test drives.

Run with the interpreter of the target environment (``make env`` does). Idempotent: a package that
already imports is left alone.

detectron2
    1. the official source from GitHub, when GitHub answers within a few seconds (cloned, then
       built);
    2. otherwise the ``pb1-detectron2==0.6`` source archive from PyPI, whose Python files are the
       official v0.6 tag's but which lacks ``detectron2/layers/csrc``. We supply a minimal
       ``vision.cpp`` that builds an empty ``detectron2._C`` (so the official ``setup.py`` runs
       unchanged) and install it under the distribution name ``detectron2``. The compiled custom ops
       (deformable conv, rotated boxes, fast COCO evaluation) are then absent; densevlm_d2 never
       uses them.

    Either source is modernised before it is built (:func:`modernize_detectron2_source`): the few
    names that today's libraries removed are replaced in the source itself, so that detectron2
    imports and runs with them without any patch in the user's process. v0.6 uses Pillow's
    ``Image.LINEAR`` (removed in Pillow 10) and numpy's ``np.int`` / ``np.float`` / ``np.str`` /
    ``np.bool`` (removed in numpy 1.24); both v0.6 and main import ``pkg_resources`` in
    ``model_zoo`` (gone from setuptools 82). An installed detectron2 that still holds them is
    reinstalled.
panopticapi
    1. the official source from GitHub when reachable;
    2. otherwise ``panopticapi-lite==0.2.0`` (the same ``panopticapi`` module) without its
       dependency metadata, which pins ``numpy<2`` and would downgrade numpy under opencv; the
       module itself needs only numpy and Pillow.
lvis
    ``lvis==0.5.3`` (the official LVIS API, OV-LVIS evaluation) without its dependency metadata:
    it pins ``opencv-python``, which would be installed beside ``opencv-python-headless`` (both are
    the ``cv2`` module). It imports pycocotools, numpy, matplotlib and cv2, which requirements.txt
    installs. Its evaluation uses numpy's ``np.float`` (removed in numpy 1.24): the wheel is
    modernised like detectron2's source (:func:`modernize_lvis_wheel`) and then installed.
chromium
    the browser test of the app (tests/app) drives headless Chromium through Selenium: when no
    Chromium and chromedriver are found, Debian's ``chromium`` and ``chromium-driver`` packages are
    installed with apt-get (as root, or through ``sudo -n``); where that is impossible, a warning
    says what to install.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

D2_GIT_URL = "https://github.com/facebookresearch/detectron2.git"
PANOPTICAPI_GIT = "git+https://github.com/cocodataset/panopticapi.git"
D2_FALLBACK = "pb1-detectron2==0.6"
D2_FALLBACK_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
PANOPTICAPI_FALLBACK = "panopticapi-lite==0.2.0"
LVIS_API = "lvis==0.5.3"

# The official setup.py compiles every file under layers/csrc into detectron2._C and only needs the
# directory and its main source to exist; detectron2's collect_env asks _C for these three
# functions.
STUB_EXTENSION = """\
// Supplied by densevlm_d2's tools/install_extras.py: the PyPI archive of detectron2 0.6 lacks
// layers/csrc. This builds a detectron2._C without the custom ops (deformable convolution, rotated
// boxes, fast COCO evaluation); it only answers detectron2's environment report.
#include <Python.h>

static PyObject* compiler_version(PyObject*, PyObject*) {
#if defined(__GNUC__) && !defined(__clang__)
  return PyUnicode_FromFormat("GCC %d.%d", __GNUC__, __GNUC_MINOR__);
#else
  return PyUnicode_FromString("unknown");
#endif
}
static PyObject* cuda_version(PyObject*, PyObject*) {
  return PyUnicode_FromString("not built (densevlm_d2 stub extension)");
}
static PyObject* has_cuda(PyObject*, PyObject*) { Py_RETURN_FALSE; }

static PyMethodDef methods[] = {
    {"get_compiler_version", compiler_version, METH_NOARGS, nullptr},
    {"get_cuda_version", cuda_version, METH_NOARGS, nullptr},
    {"has_cuda", has_cuda, METH_NOARGS, nullptr},
    {nullptr, nullptr, 0, nullptr}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module); }
"""


# (pattern, replacement) in every .py file of detectron2's source: numpy's aliases of the builtins
# (what numpy < 1.24 defined them as), Pillow's alias of BILINEAR
_RENAMES = (
    (re.compile(r"\bnp\.(int|float|str|bool)\b"), r"\1"),
    (re.compile(r"\bImage\.LINEAR\b"), "Image.BILINEAR"),
)
# model_zoo/model_zoo.py: its one use of pkg_resources, replaced with importlib.resources
_PKG_RESOURCES_IMPORT = "import pkg_resources\n"
_PKG_RESOURCES_SHIM = """\
import importlib.resources


def _resource_filename(package, resource):  # densevlm_d2: setuptools 82 has no pkg_resources
    return str(importlib.resources.files(package).joinpath(resource))
"""
_PKG_RESOURCES_CALL = "pkg_resources.resource_filename("


def _modernized(text: str, model_zoo: bool) -> str:
    for pattern, replacement in _RENAMES:
        text = pattern.sub(replacement, text)
    if model_zoo and _PKG_RESOURCES_IMPORT in text:
        text = text.replace(_PKG_RESOURCES_IMPORT, _PKG_RESOURCES_SHIM, 1)
        text = text.replace(_PKG_RESOURCES_CALL, "_resource_filename(")
    return text


def _python_files(package_dir: Path) -> list[Path]:
    return sorted(p for p in package_dir.rglob("*.py") if "projects" not in p.parts)


def modernize_detectron2_source(package_dir: Path) -> list[Path]:
    """Replace the removed names (module docstring) in the ``detectron2`` package folder (of a
    source tree or an installation); returns the files changed. Idempotent."""
    changed = []
    for path in _python_files(package_dir):
        text = path.read_text(encoding="utf-8")
        new = _modernized(text, path.name == "model_zoo.py")
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed


def outdated_detectron2_files(package_dir: Path) -> list[Path]:
    """The files of a ``detectron2`` package folder that still use a removed name."""
    return [
        p
        for p in _python_files(package_dir)
        if _modernized(t := p.read_text(encoding="utf-8"), p.name == "model_zoo.py") != t
    ]


def _log(msg: str) -> None:
    print(f"[install_extras] {msg}", flush=True)


def _pip(*args: str, timeout: float | None = None) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True, timeout=timeout)


def _importable(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _github_reachable(timeout: float) -> bool:
    try:
        subprocess.run(
            ["git", "ls-remote", "--heads", "https://github.com/facebookresearch/detectron2.git"],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        return True
    except (OSError, subprocess.SubprocessError):
        return False


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_detectron2_fallback(dest: Path) -> Path:
    """The ``pb1-detectron2`` source archive from PyPI, in ``dest``, checked against its sha256."""
    _pip(
        "download", "--no-deps", "--no-binary", ":all:", "--no-build-isolation",
        "-d", str(dest), D2_FALLBACK,
    )  # fmt: skip
    archives = sorted(dest.glob("pb1*detectron2-*.tar.gz"))
    if len(archives) != 1:
        raise RuntimeError(f"expected one source archive of {D2_FALLBACK}, found {archives}")
    return archives[0]


def prepare_detectron2_source(archive: Path, dest: Path, extension: bool = True) -> Path:
    """Unpack the fallback archive into ``dest`` as an installable ``detectron2`` source tree: the
    archive's sha256 checked, our stub ``layers/csrc/vision.cpp`` added and the distribution
    renamed. ``extension=False`` also drops the compiled extension altogether, for a machine without
    a C++ compiler (``detectron2._C`` is then absent; densevlm_d2 never imports it)."""
    digest = _sha256(archive)
    if digest != D2_FALLBACK_SHA256:
        raise RuntimeError(
            f"{archive.name} has sha256 {digest}, expected {D2_FALLBACK_SHA256}: "
            "refusing to install"
        )
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    src = next(p for p in dest.iterdir() if p.is_dir() and (p / "setup.py").is_file())
    csrc = src / "detectron2" / "layers" / "csrc"
    csrc.mkdir(parents=True, exist_ok=True)
    (csrc / "vision.cpp").write_text(STUB_EXTENSION)
    setup_py = src / "setup.py"
    text = setup_py.read_text()
    edits = {'name="pb1-detectron2"': 'name="detectron2"'}
    if not extension:
        edits["ext_modules=get_extensions(),"] = "ext_modules=[],"
    for old, new in edits.items():
        if old not in text:
            raise RuntimeError(f"unexpected setup.py in {D2_FALLBACK}: {old!r} not found")
        text = text.replace(old, new)
    setup_py.write_text(text)
    modernize_detectron2_source(src / "detectron2")
    return src


def install_detectron2_fallback() -> None:
    with tempfile.TemporaryDirectory(prefix="d2src-") as tmp:
        tmp = Path(tmp)
        archive = download_detectron2_fallback(tmp)
        _pip("install", "--no-build-isolation", str(prepare_detectron2_source(archive, tmp)))


def _detectron2_works() -> bool:
    """detectron2 imports, its _C answers the environment report (our first stub did not), and its
    source uses none of the removed names."""
    probe = "import detectron2._C as c; c.get_compiler_version(); c.get_cuda_version()"
    if subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode != 0:
        return False
    spec = importlib.util.find_spec("detectron2")
    outdated = outdated_detectron2_files(Path(spec.origin).parent)
    if outdated:
        _log(f"detectron2 uses names that today's numpy/Pillow/setuptools removed: {outdated[:3]}")
    return not outdated


def install_detectron2_from_github() -> None:
    """Clone the official source, modernise it, build it."""
    with tempfile.TemporaryDirectory(prefix="d2git-") as tmp:
        src = Path(tmp) / "detectron2"
        subprocess.run(["git", "clone", "--depth", "1", D2_GIT_URL, str(src)], check=True)
        modernize_detectron2_source(src / "detectron2")
        _pip("install", "--no-build-isolation", str(src))


def install_detectron2(github: bool) -> None:
    if _importable("detectron2"):
        if _detectron2_works():
            _log("detectron2 already installed")
            return
        _log("detectron2 is installed with an outdated extension stub or source: reinstalling")
        _pip("uninstall", "-y", "detectron2")
    if github:
        try:
            _log(f"installing detectron2 from {D2_GIT_URL}")
            install_detectron2_from_github()
            return
        except subprocess.SubprocessError as e:
            _log(f"official detectron2 install failed ({e}); using the PyPI fallback")
    _log(f"installing detectron2 from {D2_FALLBACK} with a supplied stub extension")
    install_detectron2_fallback()


def install_panopticapi(github: bool) -> None:
    if _importable("panopticapi"):
        _log("panopticapi already installed")
        return
    if github:
        try:
            _pip("install", PANOPTICAPI_GIT)
            return
        except subprocess.SubprocessError as e:
            _log(f"official panopticapi install failed ({e}); using {PANOPTICAPI_FALLBACK}")
    _pip("install", "--no-deps", PANOPTICAPI_FALLBACK)


_NUMPY_ALIASES = _RENAMES[0]


def _lvis_modernized(text: str) -> str:
    return _NUMPY_ALIASES[0].sub(_NUMPY_ALIASES[1], text)


def modernize_lvis_wheel(wheel: Path, dest: Path) -> Path:
    """A copy of the ``lvis`` wheel in ``dest`` (same file name) whose Python files use no removed
    numpy alias, its ``RECORD`` updated with the new hashes and sizes."""
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / wheel.name
    with zipfile.ZipFile(wheel) as src:
        files = {i.filename: src.read(i) for i in src.infolist()}
    changed = {}
    for name, data in files.items():
        if name.endswith(".py"):
            new = _lvis_modernized(data.decode("utf-8")).encode("utf-8")
            if new != data:
                changed[name] = files[name] = new
    (record,) = [n for n in files if n.endswith(".dist-info/RECORD")]
    lines = []
    for line in files[record].decode("utf-8").splitlines():
        path = line.split(",")[0]
        if path in changed:
            digest = base64.urlsafe_b64encode(hashlib.sha256(changed[path]).digest())
            line = f"{path},sha256={digest.rstrip(b'=').decode()},{len(changed[path])}"
        lines.append(line)
    files[record] = ("\n".join(lines) + "\n").encode("utf-8")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for name, data in files.items():
            dst.writestr(name, data)
    return out


def outdated_lvis_files(package_dir: Path) -> list[Path]:
    """The files of an ``lvis`` package folder that still use a removed numpy alias."""
    return [
        p
        for p in sorted(package_dir.rglob("*.py"))
        if _lvis_modernized(t := p.read_text(encoding="utf-8")) != t
    ]


def _lvis_dir() -> Path | None:
    spec = importlib.util.find_spec("lvis")
    return Path(spec.origin).parent if spec and spec.origin else None


def install_lvis() -> None:
    installed = _lvis_dir()
    if installed is not None and not outdated_lvis_files(installed):
        _log("lvis already installed")
        return
    with tempfile.TemporaryDirectory(prefix="lvis-") as tmp:
        tmp = Path(tmp)
        _pip("download", "--no-deps", "--only-binary=:all:", "-d", str(tmp), LVIS_API)
        (wheel,) = tmp.glob("lvis-*.whl")
        _log(f"installing {LVIS_API} without its dependency metadata, numpy aliases replaced")
        modern = modernize_lvis_wheel(wheel, tmp / "modernised")
        _pip("install", "--no-deps", "--force-reinstall", str(modern))


BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER_PACKAGES = ("chromium", "chromium-driver")


def find_browser() -> tuple[str | None, str | None]:
    """The Chromium (or Chrome) executable and its chromedriver on PATH (None where missing)."""
    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    return browser, shutil.which("chromedriver")


def install_browser() -> None:
    if all(find_browser()):
        _log("chromium and chromedriver already installed")
        return
    apt = shutil.which("apt-get")
    sudo = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if apt is None or sudo is None:
        _log(
            "WARNING: the app's browser test needs Chromium and chromedriver (Debian/Ubuntu: "
            "apt-get install chromium chromium-driver); install them, or the test will fail"
        )
        return
    install = [*sudo, apt, "install", "-y", "-q", "--no-install-recommends", *BROWSER_PACKAGES]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _log("installing " + " ".join(BROWSER_PACKAGES) + " with apt-get (the app's browser test)")
    if subprocess.run(install, env=env).returncode != 0:
        subprocess.run([*sudo, apt, "update", "-q"], env=env, check=True)
        subprocess.run(install, env=env, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--github-timeout",
        type=float,
        default=10.0,
        help="seconds to wait for GitHub before using the PyPI fallbacks",
    )
    parser.add_argument("--no-github", action="store_true", help="use the PyPI fallbacks directly")
    args = parser.parse_args()
    missing = [n for n in ("detectron2", "panopticapi") if not _importable(n)]
    if "detectron2" not in missing and not _detectron2_works():
        missing.append("detectron2")
    github = bool(missing) and not args.no_github and _github_reachable(args.github_timeout)
    if missing:
        _log(f"GitHub {'reachable' if github else 'not reachable'}")
    install_detectron2(github)
    install_panopticapi(github)
    install_lvis()
    install_browser()


if __name__ == "__main__":
    main()
