"""Where a build writes, and the disk under it: what can be checked before any work (the
output is a folder that may be replaced, writable, not a mount point, with room for what
the build will write), memory-mapped outputs given their blocks up front, and a full disk
met later told in one line with what to do."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from hibt.errors import BuildError

FULL = (errno.ENOSPC, errno.EDQUOT)
# What SQLite (SQLITE_FULL) and FAISS (strerror in a RuntimeError) say instead of raising
# an OSError with an errno.
FULL_TEXTS = ("database or disk is full", *(os.strerror(code) for code in FULL))


def existing_ancestor(path: Path) -> Path:
    """The nearest folder at or above ``path`` that exists: what a build will write into."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output(out: Path) -> None:
    """Refuse an output a build could not publish to, before an hour of work: a link, a file,
    a mount point (the finished index is renamed into place, and a mount point cannot be
    renamed or replaced), or a place this user may not write."""
    if out.is_symlink():
        raise BuildError(
            f"--out {out} is a symbolic link: the finished index would replace the link, not "
            f"what it points to; give that folder ({out.resolve()}) as --out"
        )
    if out.exists() and not out.is_dir():
        raise BuildError(f"--out {out} is a file; choose a folder to write the index to")
    if os.path.ismount(out):
        raise BuildError(
            f"--out {out} is a mount point: a finished index is renamed into place, which a "
            f"mount point cannot be; write it to a folder inside, such as {out / 'index'}"
        )
    parent = existing_ancestor(out.parent)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BuildError(f"cannot write in {parent}: choose another --out")


def human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def tree_size(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def check_free(stage: Path, out: Path, needed: int | None, items: int | None) -> None:
    """Refuse to start when the disk plainly cannot hold the build: ``needed`` bytes (a low
    estimate) less what the staging directory holds already."""
    if not needed:
        return
    where = existing_ancestor(stage.parent)
    free = shutil.disk_usage(where).free
    short = needed - tree_size(stage)
    if short > free:
        raise BuildError(
            f"{out} needs about {human(short)} more for {items} items, but {where} has "
            f"{human(free)} free: free some space or choose another --out"
        )


def index_bytes_per_vector(dim: int, factory: str) -> int:
    """Bytes a vector index keeps per vector: float32 rows when flat; PQ codes and ids in the
    parts and again in the merged lists when compressed."""
    if "IVF" not in factory and "PQ" not in factory:
        return 4 * dim
    return 2 * (dim // 8 + 8)


def new_memmap(path: Path, dtype, shape: tuple[int, ...]) -> np.memmap:
    """A new .npy file opened for writing through a memory map, with its blocks allocated
    now: writing through a map into a file the disk has no room for kills the process with
    SIGBUS, where allocating raises ENOSPC, which the build reports."""
    array = np.lib.format.open_memmap(path, "w+", dtype, shape)
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
    finally:
        os.close(fd)
    return array


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in FULL:
        return True
    return isinstance(exc, OSError | RuntimeError | sqlite3.Error) and any(
        t in str(exc) for t in FULL_TEXTS
    )


@contextmanager
def full_disk_reported(stage: Path) -> Iterator[None]:
    """A full disk anywhere in a build becomes one line saying what to do; the staging
    directory stays as the last committed step left it, so the same command resumes."""
    try:
        yield
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        where = existing_ancestor(stage.parent)
        free = shutil.disk_usage(where).free
        raise BuildError(
            f"the disk holding {where} is full ({human(free)} free): free some space, then "
            f"run the same command again; it resumes from {stage}"
        ) from exc
