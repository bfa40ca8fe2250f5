"""The binary cache's I/O: lookup, download, unpacking, archiving and upload.

Every failure is an answer, never an exception: a release the cache cannot give is built,
and an upload that fails costs nothing but a log line. Our own client (`client.py`) speaks
to shacache/shadir and checks signatures in slapos.libnetworkcache's protocol and formats,
with the TLS files for downloads as well as uploads.
"""

from __future__ import annotations

import functools
import logging
import os
import tarfile
import tempfile
import zlib
from pathlib import Path

import distro

from slapgrid.errors import first_line
from slapgrid.node import layout, process
from slapgrid.node.software.cache import decisions
from slapgrid.node.software.cache.client import (
    CacheError,
    ChecksumMismatch,
    Endpoint,
    Malformed,
    NetworkCache,
    StatusError,
)
from slapgrid.node.software.cache.decisions import CacheSettings, Candidate, Machine, Origin

log = logging.getLogger(__name__)

NOT_ARCHIVED = frozenset({".netrc", layout.COMPLETED, layout.AGENT_DIR})
"""Never uploaded: credentials, the marker written after unpacking, the agent's build log."""


@functools.cache
def this_machine(software_root: Path) -> Machine:
    """This host as entries name it: `gcc -dumpmachine` (the reference's test) and distro."""
    result = process.run(["gcc", "-dumpmachine"], cwd=software_root, home=software_root)
    multiarch = result.tail.strip().splitlines()[-1] if result.ok and result.tail.strip() else ""
    if not multiarch:
        raise OSError(f"gcc -dumpmachine failed (exit code {result.returncode})")
    return Machine(multiarch, (distro.id(), distro.version(), distro.codename()))


def _short(error: BaseException) -> str:
    if isinstance(error, StatusError):
        return f"HTTP {error.status}"
    return first_line(error)


def client(
    settings: CacheSettings, direction: str, private_key_file: str | None = None
) -> NetworkCache:
    """A client of the `download` or `upload` binary cache, with the TLS files configured
    for shacache and shadir (used whenever their URL is https)."""
    tls = settings.get

    def endpoint(service: str, kind: str) -> Endpoint:
        return Endpoint(
            settings.get(f"{direction}-binary-{kind}-url"),
            ca_file=tls(f"{service}-ca-file") or None,
            cert_file=tls(f"{service}-cert-file") or None,
            key_file=tls(f"{service}-key-file") or None,
        )

    return NetworkCache(
        endpoint("shacache", "cache"),
        endpoint("shadir", "dir"),
        certificates=settings.certificates,
        private_key_file=private_key_file,
    )


def fetch(settings: CacheSettings, url: str, directory: Path) -> Origin:
    """Install `url` into `directory` (absent) from the cache; else say why not.

    The archive is checked (SHA-512) while downloaded, unpacked beside the releases and
    moved in place only whole: a failure leaves no directory behind.
    """
    try:
        machine = this_machine(directory.parent)
    except (OSError, process.ProcessError) as exc:
        return Origin(False, f"{decisions.INCOMPATIBLE}: {_short(exc)}")
    try:
        cache = client(settings, "download")
        answer = cache.entries(decisions.cache_key(url))
        candidates = [Candidate(text, cache.trusted(text, signature)) for text, signature in answer]
    except StatusError as exc:
        return Origin(False, decisions.NO_ENTRY if exc.status == 404 else f"shadir: {_short(exc)}")
    except Malformed:  # not a list of [entry, signature]
        return Origin(False, decisions.UNREADABLE_ENTRY)
    except (OSError, CacheError) as exc:
        return Origin(False, f"{decisions.UNREACHABLE}: {_short(exc)}")
    chosen = decisions.choose(candidates, machine)
    if isinstance(chosen, str):
        if chosen == decisions.INCOMPATIBLE:
            return Origin(False, f"{chosen}: none for {machine.describe()}")
        return Origin(False, chosen)
    transfers = layout.cache_transfers(directory.parent)
    transfers.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=transfers, prefix="download-") as work:
        archive = Path(work) / "archive.tar.gz"
        try:
            with archive.open("wb") as out:
                cache.download(chosen["sha512"], out)
        except ChecksumMismatch:  # tampered, or fewer bytes than announced
            return Origin(False, decisions.WRONG_CHECKSUM)
        except (OSError, CacheError) as exc:
            return Origin(False, f"{decisions.DOWNLOAD_FAILED}: {_short(exc)}")
        try:
            unpack(archive, Path(work) / "tree", directory.name)
        except (tarfile.TarError, EOFError, zlib.error, OSError, ValueError) as exc:
            return Origin(False, f"{decisions.BAD_ARCHIVE}: {_short(exc)}")
        os.rename(Path(work) / "tree" / directory.name, directory)
    _give_to_owner(directory, directory.parent.stat())
    return Origin(True)


def unpack(archive: Path, into: Path, name: str) -> None:
    """Unpack `archive`, which must hold `name/…` only; tarfile's "tar" filter refuses
    members escaping `into` and drops set-id bits."""
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()  # reads to the end: a truncated archive fails here
        paths = [os.path.normpath(member.name) for member in members]
        strays = [path for path in paths if path != name and not path.startswith(name + "/")]
        if strays or not members:
            raise ValueError(f"the archive holds {strays[0] if strays else 'nothing'}")
        tar.extractall(into, members=members, filter="tar")


def _give_to_owner(directory: Path, owner: os.stat_result) -> None:
    """As root, the unpacked files belong to the software root's owner, as a build's do."""
    if os.geteuid() != 0:
        return
    os.lchown(directory, owner.st_uid, owner.st_gid)
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), owner.st_uid, owner.st_gid)


def archive(directory: Path, into: Path) -> Path:
    """`<md5>.tar.gz` of the release, its top directory named `<md5>` as the reference's."""
    path = into / f"{directory.name}.tar.gz"

    def kept(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
        top, _, rest = member.name.partition("/")
        return None if rest.split("/")[0] in NOT_ARCHIVED and top == directory.name else member

    with tarfile.open(path, "w:gz") as tar:
        tar.add(directory, arcname=directory.name, filter=kept)
    return path


def publish(settings: CacheSettings, url: str, directory: Path) -> str | None:
    """Upload a release just built; its shadir entry's SHA-512, or None (logged why)."""
    transfers = layout.cache_transfers(directory.parent)
    transfers.mkdir(parents=True, exist_ok=True)
    try:
        machine = this_machine(directory.parent)
        with tempfile.TemporaryDirectory(dir=transfers, prefix="upload-") as work:
            path = archive(directory, Path(work))
            cache = client(settings, "upload", settings.private_key_file)
            metadata = decisions.upload_metadata(url, str(directory.parent), machine)
            sha512 = cache.upload(path, decisions.cache_key(url), metadata)
    except Exception as exc:  # a failed upload never fails the run
        log.warning("%s: not uploaded to the binary cache: %s", url, _short(exc))
        return None
    log.info("%s: uploaded to the binary cache (%s)", url, sha512[:16])
    return str(sha512)
