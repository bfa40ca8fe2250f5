"""Emptying what a destroyed partition leaves: its directory, storage and certificates.

Nothing is followed out of a partition: a symlink is unlinked, whatever it points to.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from slapgrid.node import layout
from slapgrid.node.config import NodeConfig

_NO_FOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def delete_certificates(config: NodeConfig, partition_id: str) -> None:
    repository = config.certificate_repository_path
    if repository is None:
        return
    for path in layout.certificate_files(repository, partition_id):
        path.unlink(missing_ok=True)


def empty_storage(config: NodeConfig, path: Path, partition_id: str) -> None:
    """`instance_storage_home`: unlink `P/DATA/<name>`, empty `<home>/<name>/<pid>`."""
    data = path / "DATA"
    if not config.instance_storage_home or data.is_symlink() or not data.is_dir():
        return
    for name in sorted(os.listdir(data)):
        with contextlib.suppress(FileNotFoundError):
            if (data / name).is_symlink():
                (data / name).unlink()
        storage = Path(config.instance_storage_home) / name / partition_id
        if storage.is_dir() and not storage.is_symlink():
            empty_directory(storage)


def empty_directory(
    path: Path, *, mode: int | None = None, keep: frozenset[str] = frozenset()
) -> None:
    """Delete everything inside `path`, keeping `path` itself (and its owner).

    Works on descriptors, never following a symlink: a link is removed, not what it points
    to, and a directory swapped for a link mid-way is unlinked. `path` gets `mode`, or at
    least u+rwx, and so does every directory before it is emptied (read-only trees go too).
    Regular files of `path` named in `keep` stay (a partition keeps format's marker).
    """
    fd = os.open(path, _NO_FOLLOW_DIR)
    try:
        os.fchmod(fd, mode if mode is not None else stat.S_IMODE(os.fstat(fd).st_mode) | 0o700)
        _empty(fd, keep)
    finally:
        os.close(fd)


def _empty(dir_fd: int, keep: frozenset[str] = frozenset()) -> None:
    with os.scandir(dir_fd) as entries:
        listing = [
            (entry.name, entry.is_dir(follow_symlinks=False))
            for entry in entries
            if entry.name not in keep or not entry.is_file(follow_symlinks=False)
        ]
    for name, is_dir in listing:
        if is_dir:
            try:
                child = os.open(name, _NO_FOLLOW_DIR, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                os.unlink(name, dir_fd=dir_fd)  # replaced by a link or a file meanwhile
                continue
            try:
                os.fchmod(child, 0o700)
                _empty(child)
            finally:
                os.close(child)
            os.rmdir(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)
