"""Usage documents the instances write themselves, found on disk and consumed once sent.

`<consumption>` files in `P/var/xml_report/` and `IR/var/xml_report/<pid>/`, and ready
journals in `IR/var/xml_report/<computer id>/`. Each is validated before use and deleted
only once the master accepted the journal, so a failed send loses nothing. The instance
owns these directories: nothing below the base is followed through a symlink.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from slapgrid.slap.tioxml import (
    MAX_USAGE_FILE_BYTES,
    InvalidUsage,
    Movement,
    parse_consumption,
    parse_journal,
)

log = logging.getLogger(__name__)

REPORT_DIR = ("var", "xml_report")
"""Where an instance drops its usage documents, relative to its partition or the root."""


@dataclass(frozen=True)
class UsageFile:
    """A valid usage document found on disk, deleted once the master has accepted it."""

    base: Path
    parts: tuple[str, ...]  # directories below `base`, walked without following symlinks
    name: str
    inode: int
    partition_id: str | None  # None: a computer-level journal
    movements: tuple[Movement, ...] = ()
    journal: bytes | None = None

    @property
    def path(self) -> Path:
        return self.base.joinpath(*self.parts, self.name)


def _open_dir(base: Path, parts: Sequence[str]) -> int | None:
    """A descriptor of `base/parts…`, reached without following a symlink below `base`."""
    try:
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    for part in parts:
        try:
            child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                log.warning(
                    "Ignoring %s: not a directory (symlinks are not followed)",
                    base.joinpath(*parts),
                )
            return None
        finally:
            os.close(fd)
        fd = child
    return fd


def _read_regular(dir_fd: int, name: str) -> tuple[bytes, int]:
    """Content and inode of a regular file (never a symlink, FIFO or device), size-bounded."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidUsage("not a regular file")
        if info.st_size > MAX_USAGE_FILE_BYTES:
            raise InvalidUsage(
                f"{info.st_size} bytes, more than the {MAX_USAGE_FILE_BYTES} allowed"
            )
        with os.fdopen(os.dup(fd), "rb") as handle:
            return handle.read(MAX_USAGE_FILE_BYTES + 1), info.st_ino
    finally:
        os.close(fd)


def collect_usage_files(
    base: Path, parts: Sequence[str], partition_id: str | None
) -> list[UsageFile]:
    """Valid documents of one directory: `<consumption>` of `partition_id`, or (None) ready
    computer journals. Invalid files stay in place, with a log line saying why."""
    dir_fd = _open_dir(base, parts)
    if dir_fd is None:
        return []
    found = []
    try:
        for name in sorted(os.listdir(dir_fd)):
            path = base.joinpath(*parts, name)
            try:
                data, inode = _read_regular(dir_fd, name)
                if partition_id is None:
                    parse_journal(data, str(path))
                    found.append(UsageFile(base, tuple(parts), name, inode, None, journal=data))
                else:
                    movements = tuple(parse_consumption(data, partition_id, str(path)))
                    found.append(
                        UsageFile(base, tuple(parts), name, inode, partition_id, movements)
                    )
            except (InvalidUsage, OSError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                log.warning("Leaving usage report %s in place: %s", path, reason)
    finally:
        os.close(dir_fd)
    return found


def partition_usage_dirs(
    instance_root: Path, partition_path: Path, partition_id: str
) -> list[tuple[Path, tuple[str, ...]]]:
    """Where the usage documents of a partition are looked for."""
    return [(partition_path, REPORT_DIR), (instance_root, (*REPORT_DIR, partition_id))]


def delete_usage_files(files: Iterable[UsageFile]) -> int:
    """Delete files that were sent, unless replaced since they were read; how many went."""
    deleted = 0
    for file in files:
        dir_fd = _open_dir(file.base, file.parts)
        if dir_fd is None:
            continue
        try:
            if os.stat(file.name, dir_fd=dir_fd, follow_symlinks=False).st_ino == file.inode:
                os.unlink(file.name, dir_fd=dir_fd)
                deleted += 1
        except OSError as exc:
            log.warning("Cannot delete sent usage report %s: %s", file.path, exc.strerror)
        finally:
            os.close(dir_fd)
    return deleted
