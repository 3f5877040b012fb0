"""Crash-safe file writes: a reader sees the old file or the new one, never a mix."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: stale temps are told by age instead of by lock
    fcntl = None

TEMP_PATTERN = ".*.tmp"
STALE_AFTER_S = 3600  # without locks: a temp this old has no living writer


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temp file beside `path`, fsync it, rename it over `path`, fsync the folder.

    The writer holds a lock on its temp until the rename, so `remove_stale_temps` in another
    process never removes a temp that is still being written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            if fcntl is not None:
                os.replace(tmp, path)  # still locked; Windows cannot rename an open file
        if fcntl is None:
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if os.name == "posix":
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def remove_stale_temps(folder: Path) -> list[Path]:
    """Remove the temp files that writers killed mid-write left in `folder`; returns them."""
    removed = []
    for temp in folder.glob(TEMP_PATTERN):
        try:
            if _is_stale(temp):
                temp.unlink(missing_ok=True)
                removed.append(temp)
        except OSError:  # gone meanwhile, or not ours to remove: leave it
            continue
    return removed


def _is_stale(temp: Path) -> bool:
    if not temp.is_file():
        return False
    if fcntl is None:
        return time.time() - temp.stat().st_mtime > STALE_AFTER_S
    fd = os.open(temp, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a living writer holds it
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
