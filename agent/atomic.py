"""Crash-safe file writes: write to a temporary file, fsync, rename, fsync the directory; and
private files for what may hold embeddings or pictures of people."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def _fsync_dir(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_bytes(target: Path, data: bytes) -> None:
    """Write, fsync, rename: readers see the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_with(target: Path, write: Callable[[Path], None]) -> None:
    """Like atomic_write_bytes for writers that want a path (e.g. a library's save())."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_copy(src: Path, target: Path) -> None:
    atomic_write_with(target, lambda tmp: shutil.copyfile(src, tmp))


def ensure_private_file(path: Path) -> None:
    """Create `path` empty and readable by its owner only (0600) unless it exists, so SQLite
    opens it with those permissions and gives them to its -wal and -shm files too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
