#!/usr/bin/env python
"""Install densevlm_d2 on a machine without network access that brings its own PyTorch.

On a connected machine, inside the project's environment (``make env``)::

    python tools/wheelhouse.py build --python-version 3.12 --out wheelhouse-cp312

gathers, for the target Python and manylinux x86_64, every package densevlm_d2 needs beyond
torch and torchvision: binary wheels of the versions tested here (read from this environment),
pure-Python sdists built into wheels, and detectron2's fallback source (see install_extras.py),
which is built on the target. Packages the node already has because it has torch and torchvision
(numpy, Pillow, sympy, jinja2, ...) are left out, and so is opencv (nothing imports it; detectron2
treats it as optional). Copy the folder and this repository to the node, then::

    python tools/wheelhouse.py install --wheelhouse wheelhouse-cp312 [--prefix /path/to/prefix]

installs from the folder alone (``pip --no-index``) with the node's interpreter, against its own
torch and torchvision, builds detectron2 there (without its compiled extension where the node has
no C++ compiler) and installs densevlm_d2 itself. With ``--prefix``, the packages go to that
prefix and the command prints the ``PYTHONPATH`` to export.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

from install_extras import (
    D2_FALLBACK,
    download_detectron2_fallback,
    modernize_lvis_wheel,
    outdated_detectron2_files,
    prepare_detectron2_source,
)

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = "manifest.json"
# What densevlm_d2 imports at run time, with the tests (pytest) and setuptools (to build
# detectron2 and this project on the node). detectron2 itself is installed without its
# dependency metadata: these are the parts of it that it imports (not black, hydra, pydot, future).
RUNTIME = ("open_clip_torch", "timm", "huggingface_hub", "safetensors", "fvcore", "iopath",
           "pycocotools", "shapely", "matplotlib", "tqdm", "pytest", "setuptools")  # fmt: skip
DETECTRON2_RUNTIME = ("yacs", "tabulate", "termcolor", "cloudpickle", "tensorboard", "omegaconf")
# The node's own PyTorch: these and everything they require are taken from the node.
PROVIDED = ("torch", "torchvision")
# installed with --no-deps: panopticapi-lite's metadata pins numpy<2 and pulls scikit-image, it
# needs neither; lvis's pins opencv-python (it imports cv2, which the node needs for OV-LVIS
# evaluation: opencv-python-headless)
NO_DEPS = ("panopticapi-lite", "lvis")
# manylinux tags, newest first: torch's own wheels need glibc >= 2.28, so a node with torch has it
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(28, 16, -1)] + [
    "manylinux2014_x86_64"
]


class WheelhouseError(RuntimeError):
    pass


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(dist: metadata.Distribution, python_version: str, extras=()) -> list:
    """``dist``'s requirements on Linux x86_64 with ``python_version``, with the given extras."""
    from packaging.requirements import Requirement

    out = []
    for line in dist.requires or ():
        req = Requirement(line)
        env = {"python_version": python_version, "python_full_version": python_version + ".0",
               "sys_platform": "linux", "platform_system": "Linux",
               "platform_machine": "x86_64", "implementation_name": "cpython",
               "platform_python_implementation": "CPython", "os_name": "posix"}  # fmt: skip
        active = req.marker is None or any(
            req.marker.evaluate({**env, "extra": e}) for e in ("", *extras)
        )
        if active:
            out.append(req)
    return out


def closure(roots, python_version: str, stop=frozenset()) -> dict:
    """Installed distributions reachable from ``roots`` through their requirements (those markers
    select for the target), as {canonical name: version}; ``stop`` names are not entered."""
    seen, missing, todo = {}, [], [(r, ()) for r in roots]
    while todo:
        name, extras = todo.pop()
        key = canonical(name)
        if key in stop or (key in seen and not extras):
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
            continue
        seen[key] = dist.version
        todo += [(r.name, tuple(r.extras)) for r in _requirements(dist, python_version, extras)]
    if missing:
        raise WheelhouseError(
            f"not installed in this environment, so no tested version to take: {sorted(missing)}. "
            "Build the wheelhouse from the project's environment (make env)."
        )
    return seen


def plan(python_version: str) -> dict:
    """{canonical name: version} of what the wheelhouse holds (detectron2's source aside)."""
    provided = closure(PROVIDED, python_version)
    wanted = closure(RUNTIME + DETECTRON2_RUNTIME, python_version, stop=frozenset(provided))
    wanted.pop("opencv-python-headless", None)
    for name in NO_DEPS:
        wanted[canonical(name)] = metadata.version(name)
    return dict(sorted(wanted.items()))


def _pip(*args, cwd=None, env=None, python=sys.executable) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
    )


def _is_pure(wheel: Path) -> bool:
    return wheel.name.endswith("-none-any.whl")


def fetch(name: str, version: str, python_version: str, dest: Path) -> Path:
    """One wheel for the target: the binary from the index, or the sdist built here when it is pure
    Python."""
    with tempfile.TemporaryDirectory(prefix=f"wh-{name}-") as tmp:
        tmp = Path(tmp)
        abi = "cp" + python_version.replace(".", "")
        target = ["--python-version", python_version, "--implementation", "cp", "--abi", abi]
        target += [a for p in PLATFORMS for a in ("--platform", p)]
        pin = f"{name}=={version}"
        binary = _pip("download", "--no-deps", "--only-binary=:all:", *target, "-d", str(tmp), pin)
        if binary.returncode != 0:
            sdist = _pip("download", "--no-deps", "--no-binary=:all:", "-d", str(tmp / "src"), pin)
            if sdist.returncode != 0:
                raise WheelhouseError(
                    f"{pin}: no wheel for Python {python_version} "
                    f"and no source archive:\n{sdist.stderr[-2000:]}"
                )
            (archive,) = (tmp / "src").iterdir()
            built = _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp), str(archive))
            if built.returncode != 0:
                raise WheelhouseError(f"{pin}: building its wheel failed:\n{built.stderr[-2000:]}")
        (wheel,) = tmp.glob("*.whl")
        if binary.returncode != 0 and not _is_pure(wheel):
            raise WheelhouseError(
                f"{pin} has no binary wheel for Python {python_version} on manylinux "
                f"x86_64, and its source builds a platform wheel ({wheel.name}), which cannot be "
                "built here for another interpreter"
            )
        if canonical(name) == "lvis":  # np.float replaced, as install_extras.py installs it
            wheel = modernize_lvis_wheel(wheel, tmp / "modernised")
        return Path(shutil.move(wheel, dest / wheel.name))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(python_version: str, out: Path, jobs: int = 4) -> dict:
    if not re.fullmatch(r"3\.\d+", python_version):
        raise WheelhouseError(f"--python-version must look like 3.12, got {python_version!r}")
    wanted = plan(python_version)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise WheelhouseError(f"{out} is not empty: give a new folder")
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    try:
        with ThreadPoolExecutor(jobs) as pool:
            futures = {
                n: pool.submit(fetch, n, v, python_version, staging) for n, v in wanted.items()
            }
            wheels = {n: f.result() for n, f in futures.items()}
        d2 = download_detectron2_fallback(staging)
        for f in staging.iterdir():
            f.rename(out / f.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    files = sorted(p for p in out.iterdir() if p.is_file())
    manifest = {
        "python_version": python_version,
        "platforms": PLATFORMS,
        "built_with": {
            "python": sys.version.split()[0],
            **{n: metadata.version(n) for n in PROVIDED},
        },
        "packages": wanted,
        "no_deps": [canonical(n) for n in NO_DEPS],
        "detectron2_source": d2.name,
        "files": {p.name: _sha256(p) for p in files},
        "mib": round(sum(p.stat().st_size for p in files) / 2**20, 1),
    }
    del wheels
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


# --- on the node ------------------------------------------------------------------------------


def _site_dirs(prefix: Path | None) -> list[str]:
    if prefix is None:
        return []
    paths = sysconfig.get_paths(
        scheme="posix_prefix", vars={"base": str(prefix), "platbase": str(prefix)}
    )
    return list(dict.fromkeys([paths["purelib"], paths["platlib"]]))


def _check(run: subprocess.CompletedProcess, what: str) -> None:
    if run.returncode != 0:
        raise WheelhouseError(f"{what} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")


def load_manifest(wheelhouse: Path) -> dict:
    path = wheelhouse / MANIFEST
    if not path.is_file():
        raise WheelhouseError(
            f"{wheelhouse} has no {MANIFEST}: not a wheelhouse built by tools/wheelhouse.py build"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WheelhouseError(
            f"{path} cannot be read ({e}): a damaged copy? Copy the wheelhouse again or rebuild it "
            "with tools/wheelhouse.py build"
        ) from None
    required = ("files", "python_version", "packages", "no_deps", "detectron2_source")
    missing = [k for k in required if not isinstance(manifest, dict) or k not in manifest]
    if missing:
        raise WheelhouseError(
            f"{path} lacks {missing}: not a manifest written by tools/wheelhouse.py build"
        )
    for name, digest in manifest["files"].items():
        f = wheelhouse / name
        if not f.is_file():
            raise WheelhouseError(f"{f} is listed in the manifest but missing")
        if _sha256(f) != digest:
            raise WheelhouseError(f"{f} does not match its sha256 in the manifest (damaged copy?)")
    return manifest


def install(wheelhouse: Path, prefix: Path | None = None, log=print) -> dict:
    manifest = load_manifest(wheelhouse)
    target = manifest["python_version"]
    here = "{}.{}".format(*sys.version_info[:2])
    if here != target:
        raise WheelhouseError(f"this wheelhouse is for Python {target}; this is Python {here}")
    for name in PROVIDED:
        try:
            log(f"{name} {metadata.version(name)} (the node's own)")
        except metadata.PackageNotFoundError:
            raise WheelhouseError(
                f"{name} is not installed for {sys.executable}: the wheelhouse leaves torch and "
                "torchvision to the node (install the node's PyTorch first)"
            ) from None
    # no pip configuration either: its find-links or index settings must not supply anything
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}
    site = _site_dirs(prefix)
    if site:
        env["PYTHONPATH"] = os.pathsep.join(site + [p for p in [env.get("PYTHONPATH")] if p])
    where = ["--prefix", str(prefix)] if prefix else []
    offline = ["--no-index", "--find-links", str(wheelhouse)]
    no_deps = set(manifest["no_deps"])
    pins = [f"{n}=={v}" for n, v in manifest["packages"].items() if n not in no_deps]
    log(f"installing {len(pins)} packages from {wheelhouse}")
    _check(_pip("install", *offline, *where, *pins, env=env), "installing the wheels")
    loose = [f"{n}=={manifest['packages'][n]}" for n in sorted(no_deps)]
    _check(_pip("install", *offline, *where, "--no-deps", *loose, env=env), f"installing {loose}")
    extension = _install_detectron2(wheelhouse / manifest["detectron2_source"], where, env, log)
    log("installing densevlm_d2")
    _check(
        _pip("install", *offline, *where, "--no-deps", "--no-build-isolation", str(ROOT), env=env),
        "installing densevlm_d2",
    )
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import densevlm_d2, detectron2, open_clip, panopticapi, pytest; "
            "print(densevlm_d2.__file__)",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tempfile.gettempdir(),
    )
    _check(probe, "importing the installed packages")
    log(f"densevlm_d2 installed at {probe.stdout.strip()}")
    if site:
        log("export PYTHONPATH=" + env["PYTHONPATH"])
    return {"pythonpath": env.get("PYTHONPATH") if site else None, "detectron2_ext": extension}


def _install_detectron2(archive: Path, where, env, log) -> bool:
    """Build detectron2 here against the node's torch: with our stub extension, or without any
    extension where that cannot compile. Returns whether the extension was built."""
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, detectron2; print(os.path.dirname(detectron2.__file__))",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    if probe.returncode == 0:
        outdated = outdated_detectron2_files(Path(probe.stdout.strip()))
        if not outdated:
            log("detectron2 already installed")
            return True
        log(
            f"the installed detectron2 uses names that today's numpy/Pillow/setuptools removed "
            f"({outdated[0]}, ...): building the modernised source over it"
        )
    for extension in (True, False):
        with tempfile.TemporaryDirectory(prefix="d2src-") as tmp:
            src = prepare_detectron2_source(archive, Path(tmp), extension=extension)
            log(
                f"building detectron2 from {D2_FALLBACK} "
                f"({'with the stub extension' if extension else 'without an extension'})"
            )
            run = _pip(
                "install",
                "--no-index",
                "--no-deps",
                "--no-build-isolation",
                *where,
                str(src),
                env=env,
            )
        if run.returncode == 0:
            return extension
        if extension:
            log(
                "building detectron2's stub extension failed (no C++ compiler or Python headers?):"
                f"\n{run.stderr[-1500:]}\ninstalling it without one (densevlm_d2 never uses it)"
            )
    _check(run, "installing detectron2")
    return False


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="gather the wheelhouse (on a machine with package access)")
    b.add_argument(
        "--python-version",
        default="{}.{}".format(*sys.version_info[:2]),
        help="the target node's Python, e.g. 3.12",
    )
    b.add_argument("--out", type=Path, required=True, help="a new folder")
    b.add_argument("--plan", action="store_true", help="only print what would be gathered")
    i = sub.add_parser("install", help="install from the wheelhouse alone (on the node)")
    i.add_argument("--wheelhouse", type=Path, required=True)
    i.add_argument("--prefix", type=Path, help="install there instead of this environment")
    i.add_argument("--env-file", type=Path, help="write `export PYTHONPATH=...` here")
    args = parser.parse_args(argv)
    try:
        if args.command == "build" and args.plan:
            print(json.dumps(plan(args.python_version), indent=1))
        elif args.command == "build":
            m = build(args.python_version, args.out)
            print(
                f"{len(m['files'])} files, {m['mib']} MiB in {args.out} "
                f"for Python {m['python_version']}"
            )
        else:
            prefix = args.prefix.resolve() if args.prefix else None
            done = install(args.wheelhouse.resolve(), prefix)
            if args.env_file:
                path = done["pythonpath"]
                args.env_file.write_text(f"export PYTHONPATH={path}\n" if path else "")
    except WheelhouseError as e:
        sys.exit(f"wheelhouse: {e}")


if __name__ == "__main__":
    main()
