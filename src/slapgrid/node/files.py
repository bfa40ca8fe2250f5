"""Small file operations the agent relies on for crash safety."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def atomic_write(
    path: Path, data: str | bytes, mode: int = 0o644, owner: tuple[int, int] | None = None
) -> None:
    """Write to a temporary file beside `path`, fsync, then rename: all or nothing.

    `owner` (uid, gid) is applied before the rename, so the file never appears with the
    wrong owner.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        if owner is not None:
            os.chown(temporary, *owner)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_if_changed(path: Path, data: str, mode: int = 0o644) -> bool:
    """Atomic write only when the content or mode differs; True if something was written."""
    try:
        if path.read_text(encoding="utf-8") == data and (path.stat().st_mode & 0o7777) == mode:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    atomic_write(path, data, mode)
    return True


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
        return None


def rotate(path: Path, max_bytes: int, backups: int) -> bool:
    """Once `path` holds `max_bytes`, shift it to `path.1` (`.1` to `.2` …; the oldest past
    `backups` is dropped), as logging's RotatingFileHandler does; True if it rotated.

    Renames only: a symlink planted among the backups is moved, never followed.
    """
    try:
        if path.stat().st_size < max_bytes:
            return False
    except FileNotFoundError:
        return False
    backup = [path.with_name(f"{path.name}.{index}") for index in range(backups + 1)]
    for index in range(backups - 1, 0, -1):
        with contextlib.suppress(FileNotFoundError):
            backup[index].replace(backup[index + 1])
    path.replace(backup[1])
    return True
