"""Writing files so that a crash, a kill or a full disk never leaves half of one.

Every file this project writes (checkpoints, exported CLIPs, text-embedding caches, label files,
jsons) goes through :func:`atomic_write`: the data goes to a temporary file next to the target,
is flushed to disk, and only then renamed over the target, so readers see the old file or the
new one, never a truncated one. Folders that a preparation script fills go through
:func:`atomic_folder`: the files are written into a temporary folder, which replaces the target
folder only when every file is in it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["DiskFullError", "atomic_folder", "atomic_write", "temporary_files"]

# temporary names: ".<target>.<random>.tmp" (files), ".<target>.partial-<random>" (folders)
_TMP_SUFFIX = ".tmp"
_PARTIAL = ".partial-"


class DiskFullError(OSError):
    """The disk filled up while a file was written; the message names the file. The target (for
    example the previous checkpoint) is left as it was."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` or an exception it was raised from is "no space left" / "quota exceeded"
    (torch.save reports a full disk as a RuntimeError whose context is the OSError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _free_bytes(folder: Path) -> str:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "unknown"
    return f"{free / 2**20:.1f} MiB"


def _open_temporary(path: Path, binary: bool) -> tuple[IO, str]:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; outputs follow the umask
    return os.fdopen(fd, "wb" if binary else "w"), tmp


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, binary: bool = True) -> Iterator[IO]:
    """``with atomic_write(path) as f: ...`` writes ``path`` atomically (see the module
    docstring); the parent folder is created. A full disk is a :class:`DiskFullError` naming
    ``path``; any error removes the temporary file and leaves ``path`` untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    f, tmp = _open_temporary(path, binary)
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if _disk_full(e):
            kept = "the previous file is untouched" if path.exists() else "nothing was written"
            raise DiskFullError(
                errno.ENOSPC,
                f"no space left on the device while writing {path} ({_free_bytes(path.parent)} "
                f"free); {kept}. Free some space (or write elsewhere) and run again",
            ) from e
        raise


def temporary_files(directory: str | os.PathLike) -> list[Path]:
    """The temporary files and folders that :func:`atomic_write` and :func:`atomic_folder` leave
    in ``directory`` when their process is killed mid-write."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.name.startswith(".") and (p.name.endswith(_TMP_SUFFIX) or _PARTIAL in p.name)
    )


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """``with atomic_folder(out) as tmp: ...`` fills a temporary folder next to ``out``; when the
    block ends without an error it replaces ``out`` (an older ``out`` is removed), otherwise it is
    removed and ``out`` stays as it was. So a folder that a reader finds is always complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}{_PARTIAL}", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}{_PARTIAL}old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if _disk_full(e):
            raise DiskFullError(
                errno.ENOSPC,
                f"no space left on the device while writing {path} ({_free_bytes(path.parent)} "
                f"free); {path} is left as it was. Free some space and run again",
            ) from e
        raise
