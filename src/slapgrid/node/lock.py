"""Run locks: two runs that would touch the same partitions or software never overlap.

An OS file lock (flock through `filelock`) is released by the kernel when its holder dies,
so unlike the reference's pid files it can neither go stale nor be raced.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from slapgrid.errors import LockedError


@contextlib.contextmanager
def hold(path: Path, what: str, *, wait: float = 0) -> Iterator[None]:
    """Hold the lock at `path` or raise `LockedError` naming who holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=wait)
    try:
        lock.acquire()
    except Timeout:
        holder = _holder(path)
        raise LockedError(
            f"another slapgrid {what} run is in progress{holder}; lock file {path}"
        ) from None
    try:
        _pid_file(path).write_text(str(os.getpid()))
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            _pid_file(path).unlink()
        lock.release()


def _pid_file(path: Path) -> Path:
    return path.with_name(path.name + ".pid")


def _holder(path: Path) -> str:
    try:
        return f" (pid {int(_pid_file(path).read_text())})"
    except (OSError, ValueError):
        return ""
