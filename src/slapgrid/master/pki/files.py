"""Writing key material: created whole or not at all, never over an existing file.

A key is written to a temporary file (0600 from its creation, never wider) and linked to
its name: `os.link` fails when the name exists, so two masters starting together, or a
crash half-way, never leave a half-written or replaced key.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from slapgrid.errors import SlapgridError

KEY_MODE = 0o600
PUBLIC_MODE = 0o644


class CredentialError(SlapgridError):
    """A credential file missing, unreadable or not what it should be: one line."""


def make_private_dir(path: Path) -> Path:
    """The directory, created 0700 when absent (an existing one keeps its mode)."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise CredentialError(f"cannot create {path}: {exc.strerror or exc}") from None
    return path


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock (flock) on `path`, released on exit or when the process dies."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, KEY_MODE)
    except OSError as exc:
        raise CredentialError(f"cannot lock {path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _temporary(directory: Path, data: bytes, mode: int) -> Path:
    fd, name = tempfile.mkstemp(dir=directory, prefix=".tmp-")  # 0600 from the start
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(name, mode)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise
    return Path(name)


def create_exclusive(path: Path, data: bytes, mode: int) -> bool:
    """Write `path` whole with `mode`; False (nothing written) when it already exists."""
    try:
        temporary = _temporary(path.parent, data, mode)
    except OSError as exc:
        raise CredentialError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        os.link(temporary, path)
    except FileExistsError:
        return False
    except OSError as exc:
        raise CredentialError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
    return True


def replace(path: Path, data: bytes, mode: int) -> None:
    """Write `path` whole with `mode`, over what was there (derived material only)."""
    try:
        os.replace(_temporary(path.parent, data, mode), path)
    except OSError as exc:
        raise CredentialError(f"cannot write {path}: {exc.strerror or exc}") from None


def read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CredentialError(f"missing credential file {path}") from None
    except OSError as exc:
        raise CredentialError(f"cannot read {path}: {exc.strerror or exc}") from None
