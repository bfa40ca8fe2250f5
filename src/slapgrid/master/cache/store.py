"""The cache on disk: shacache files named by their SHA-512, shadir entries by their key.

    <cache dir>/shacache/<sha512 hex>   a file's content, written once
    <cache dir>/shadir/<key>            a JSON list of [entry, signature] pairs
    <cache dir>/tmp/                    uploads being received

Every file appears whole or not at all: it is written under `tmp/` (same file system), then
renamed into place. Two uploads of the same content each write their own temporary file and
the second rename replaces identical bytes. Shadir updates (read, append, rename) hold a lock
(`flock` on `shadir.lock`), so concurrent writers of a key lose no entry, in this process or
another one serving the same directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from slapgrid.master.errors import BadRequest, NotFound, TooLarge

CACHE_DIR = "cache"
MAX_UPLOAD_BYTES = 64 << 30
"""A shacache file's bound: far above any release archive."""
MAX_KEY_LENGTH = 200
MAX_ENTRY_BYTES = 1 << 20
"""One shadir entry (its JSON and signature): a few hundred bytes in practice."""
MAX_DIRECTORY_BYTES = 16 << 20
"""All entries of one key."""
SHA512 = re.compile(r"[0-9a-f]{128}")
_KEY_REFUSED = re.compile(r"[\x00-\x20\x7f/\\]")


def check_sha512(value: str) -> str:
    if not SHA512.fullmatch(value):
        raise BadRequest("a shacache name is a SHA-512 in lowercase hexadecimal")
    return value


def check_key(key: str) -> str:
    """A shadir key usable as a file name: no `/`, no `..`, not hidden, bounded."""
    if not key or len(key.encode()) > MAX_KEY_LENGTH:
        raise BadRequest(f"a shadir key is 1 to {MAX_KEY_LENGTH} bytes")
    if _KEY_REFUSED.search(key) or ".." in key or key.startswith("."):
        raise BadRequest("a shadir key holds no '/', '\\', '..', space or control character")
    return key


def check_entry(body: bytes) -> list[str]:
    """A shadir upload: a JSON list [entry, signature], the entry a JSON object."""
    try:
        document = json.loads(body)
    except ValueError:
        raise BadRequest("a shadir entry is a JSON list [entry, signature]") from None
    if (
        not isinstance(document, list)
        or len(document) != 2
        or not all(isinstance(item, str) for item in document)
    ):
        raise BadRequest("a shadir entry is a JSON list of two strings [entry, signature]")
    try:
        entry = json.loads(document[0])
    except ValueError:
        raise BadRequest("a shadir entry's first item is a JSON document") from None
    if not isinstance(entry, dict):
        raise BadRequest("a shadir entry's first item is a JSON object")
    return document


class Upload:
    """A shacache file being received: written to a temporary file and hashed as it comes."""

    def __init__(self, store: CacheStore) -> None:
        self._store = store
        descriptor, name = tempfile.mkstemp(prefix="upload-", dir=store.tmp)
        self._file: BinaryIO = os.fdopen(descriptor, "wb")
        self._path = Path(name)
        self._hash = hashlib.sha512()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self._store.max_upload_bytes:
            raise TooLarge(f"a shacache file is at most {self._store.max_upload_bytes} bytes")
        self._hash.update(data)
        self._file.write(data)

    def commit(self, expected: str | None = None) -> str:
        """Into place under its SHA-512 (refused if not `expected`); returns the SHA-512."""
        digest = self._hash.hexdigest()
        if expected is not None and digest != expected:
            raise BadRequest(f"the content's SHA-512 is {digest}, not the one named")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.chmod(self._path, 0o640)
        os.replace(self._path, self._store.shacache / digest)
        return digest

    def discard(self) -> None:
        self._file.close()
        self._path.unlink(missing_ok=True)


class CacheStore:
    """The shacache and shadir under `directory` (created, private, at first use)."""

    def __init__(self, directory: str | Path, *, max_upload_bytes: int = MAX_UPLOAD_BYTES) -> None:
        self.directory = Path(directory)
        self.max_upload_bytes = max_upload_bytes
        self.shacache = self.directory / "shacache"
        self.shadir = self.directory / "shadir"
        self.tmp = self.directory / "tmp"
        for path in (self.directory, self.shacache, self.shadir, self.tmp):
            path.mkdir(mode=0o750, parents=True, exist_ok=True)
        self._lock_file = self.directory / "shadir.lock"
        self._lock = threading.Lock()

    # --- shacache

    def file(self, sha512: str) -> Path:
        """The file of that SHA-512; NotFound if the cache has none."""
        path = self.shacache / check_sha512(sha512)
        if not path.is_file():
            raise NotFound(f"no file {sha512} in this cache")
        return path

    @contextlib.contextmanager
    def receiving(self) -> Iterator[Upload]:
        """An upload, its temporary file removed unless committed."""
        upload = Upload(self)
        try:
            yield upload
        finally:
            upload.discard()

    # --- shadir

    def entries(self, key: str) -> bytes:
        """A key's entries as served: a JSON list of [entry, signature]; NotFound if none."""
        try:
            return (self.shadir / check_key(key)).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no entry for key {key!r} in this cache") from None

    def add_entry(self, key: str, body: bytes) -> None:
        """Append a checked [entry, signature] to a key's list (once: an identical pair
        again changes nothing)."""
        path = self.shadir / check_key(key)
        if len(body) > MAX_ENTRY_BYTES:
            raise TooLarge(f"a shadir entry is at most {MAX_ENTRY_BYTES} bytes")
        pair = check_entry(body)
        with self._locked():
            try:
                pairs: list[Any] = json.loads(path.read_bytes())
            except FileNotFoundError:
                pairs = []
            if pair in pairs:
                return
            pairs.append(pair)
            data = json.dumps(pairs).encode()
            if len(data) > MAX_DIRECTORY_BYTES:
                raise TooLarge(f"key {key!r} holds {MAX_DIRECTORY_BYTES} bytes of entries")
            self._write(path, data)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock, open(self._lock_file, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield  # closing the file releases the lock

    def _write(self, path: Path, data: bytes) -> None:
        descriptor, name = tempfile.mkstemp(prefix="shadir-", dir=self.tmp)
        try:
            with os.fdopen(descriptor, "wb") as output:
                output.write(data)
                output.flush()
                os.fsync(output.fileno())
            os.chmod(name, 0o640)
            os.replace(name, path)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
