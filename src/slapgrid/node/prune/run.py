"""`slapgrid prune`: observe the disk, ask the master, remove what `plan.decide` says.

Safety: only a directory straight under the software root named as a release (32 hex
digits), or a `<shared root>/<name>/<hash>` directory, is ever removed, and never through
a symlink. Every release's build lock is held while pruning, so no build starts (or
half-made shared part is judged) meanwhile; a build already running makes prune refuse.
Without the master, only shared parts are pruned and the status is OFFLINE (3).
"""

from __future__ import annotations

import configparser
import contextlib
import fcntl
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from pathlib import Path

from slapgrid.errors import LockedError, SlapgridError
from slapgrid.exit_status import ExitStatus
from slapgrid.node import layout
from slapgrid.node.config import NodeConfig
from slapgrid.node.prune.plan import Kind, Observed, SharedPart, SoftwareDir, Verdict, decide
from slapgrid.node.safety import software_hash
from slapgrid.node.software.run import partitions_by_software, remove_tree
from slapgrid.slap.client import SlapClient
from slapgrid.slap.documents import Computer
from slapgrid.slap.errors import ConnectionError, ServerError

log = logging.getLogger(__name__)

_RELEASE_NAME = re.compile(r"[0-9a-f]{32}")
_EXTENDS = re.compile(r"^extends\s*=\s*(\S+)\s*$", re.MULTILINE)


@dataclass
class PruneResult:
    verdicts: list[Verdict]
    status: ExitStatus = ExitStatus.OK
    offline_reason: str | None = None


def shared_root(config: NodeConfig) -> Path | None:
    """Where new shared parts go: the last of `shared_part_list`, as the reference's."""
    return Path(config.shared_part_list[-1]) if config.shared_part_list else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="strict")
    except (OSError, UnicodeDecodeError):
        return None


def _texts(paths: Iterator[Path]) -> tuple[str, ...]:
    return tuple(text for path in paths if (text := _read(path)) is not None)


def _software_dirs(root: Path) -> tuple[SoftwareDir, ...]:
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted(root.iterdir()):
            if not _RELEASE_NAME.fullmatch(entry.name) or not entry.is_dir():
                continue
            match = _EXTENDS.search(_read(entry / layout.SOFTWARE_PROFILE) or "")
            url = match.group(1).replace("$$", "$") if match else None
            signatures = _texts(iter([entry / ".installed.cfg", *sorted(entry.glob("bin/*"))]))
            found.append(SoftwareDir(entry.name, url, signatures, entry.is_symlink()))
    return tuple(found)


def _shared_parts(root: Path | None) -> tuple[SharedPart, ...]:
    if root is None:
        return ()
    parts = []
    for part in sorted(root.glob("*/*")):
        if part.is_symlink() or not part.is_dir():
            continue
        files = (
            child
            for child in sorted(part.iterdir())
            if child.name == ".buildout-shared.json" or fnmatchcase(child.name, ".*signature")
        )
        parts.append(SharedPart(f"{part.parent.name}/{part.name}", _texts(files)))
    return tuple(parts)


def _instance_signatures(instance_root: Path) -> tuple[str, ...]:
    """The partitions' buildout files, and the software of nested SlapOS (a `slapos.cfg`
    anywhere in the instance root), whose parts may be the node's shared parts."""
    texts: list[str] = []
    for partition in sorted(instance_root.glob("*/")):
        texts += _texts(iter([partition / "buildout.cfg", partition / ".installed.cfg"]))
    for directory, _, files in os.walk(instance_root):
        if "slapos.cfg" not in files:
            continue
        parser = configparser.ConfigParser(interpolation=None)
        with contextlib.suppress(configparser.Error, UnicodeDecodeError):
            parser.read(Path(directory) / "slapos.cfg")
        nested = parser.get("slapos", "software_root", fallback=None)
        if nested:
            for software in _software_dirs(Path(nested)):
                texts += software.signatures
    return tuple(texts)


def ask_master(client: SlapClient | None) -> tuple[Computer | None, str | None]:
    """The computer document, or None and why when the master cannot be reached now."""
    if client is None:
        return None, "no master to ask"
    try:
        return client.computer(), None
    except (ConnectionError, ServerError) as exc:
        return None, str(exc)


def observe(
    config: NodeConfig, computer: Computer | None, other_software: Sequence[Path] = ()
) -> Observed:
    """What `decide` needs from the disk and the master's document (None: not had).

    `other_software`: software roots of other nodes sharing the shared parts (the
    reference's `--additional-software-directory`); whatever their releases use stays.
    """
    master: dict[str, str] | None = None
    master_users: dict[str, list[str]] = {}
    if computer is not None:
        master = {
            software_hash(release.url): release.requested_state or "available"
            for release in computer.software_releases
        }
        for partition in computer.partitions:
            if partition.software_release_url:
                name = software_hash(partition.software_release_url)
                master_users.setdefault(name, []).append(partition.partition_id)
    software = _software_dirs(config.software_root)
    users: dict[str, list[str]] = {k: list(v) for k, v in master_users.items()}
    for target, pids in partitions_by_software(config.instance_root).items():
        if target.parent == config.software_root.resolve():
            users.setdefault(target.name, []).extend(pids)
    signatures = _instance_signatures(config.instance_root)
    for item in software:  # a partition's buildout naming the directory uses it too
        if item.name not in users and any(item.name in text for text in signatures):
            users[item.name] = ["an instance's buildout"]
    for root in other_software:
        if not root.is_dir():
            log.warning("additional software directory %s does not exist", root)
    return Observed(
        software,
        _shared_parts(shared_root(config)),
        master,
        {name: tuple(dict.fromkeys(pids)) for name, pids in users.items()},
        signatures,
        tuple(item for root in other_software for item in _software_dirs(root)),
    )


@contextlib.contextmanager
def _builds_held(config: NodeConfig, names: list[str]) -> Iterator[None]:
    """Every release's build lock (as `software_lock` takes it), or LockedError at once."""
    descriptors = []
    try:
        with contextlib.suppress(OSError):  # an unwritable root: the open below says so
            layout.software_dir_lock(config.software_root, "x").parent.mkdir(
                parents=True, exist_ok=True
            )
        for name in names:
            path = layout.software_dir_lock(config.software_root, name)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise SlapgridError(f"cannot take the build lock {path}: {exc}") from None
            descriptors.append(descriptor)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LockedError(
                    f"a software run is building or removing {name}: prune when it ends"
                ) from None
        yield
    finally:
        for descriptor in descriptors:
            os.close(descriptor)


def _remove(config: NodeConfig, verdict: Verdict) -> None:
    """Delete one verdict's directory, re-checking where it is first."""
    if verdict.kind == Kind.SOFTWARE:
        root, path = config.software_root, config.software_root / verdict.target
        ok = _RELEASE_NAME.fullmatch(verdict.target) is not None
    else:
        root = shared_root(config) or Path("/nonexistent")
        path = root / verdict.target
        ok = path.parent.parent == root and ".." not in Path(verdict.target).parts
    if not ok or path.is_symlink() or not path.resolve().is_relative_to(root.resolve()):
        raise SlapgridError(f"refusing to remove {path}: not a directory prune may remove")
    log.info("removing %s %s: %s", verdict.kind, path, verdict.reason)
    remove_tree(path)


def run_prune(
    config: NodeConfig,
    client: SlapClient | None,
    *,
    dry_run: bool,
    other_software: Sequence[Path] = (),
) -> PruneResult:
    """Decide, then (unless `dry_run`) remove; a removal that fails is logged, status FAILED.

    The master is asked first: its releases' locks are held too, so a build it just asked
    for cannot start while shared parts are judged.
    """
    computer, offline = ask_master(client)
    status = ExitStatus.OFFLINE if offline else ExitStatus.OK
    if dry_run:
        return PruneResult(decide(observe(config, computer, other_software)), status, offline)
    names = {s.name for s in _software_dirs(config.software_root)}
    if computer is not None:
        names |= {software_hash(release.url) for release in computer.software_releases}
    with _builds_held(config, sorted(names)):
        result = PruneResult(decide(observe(config, computer, other_software)), status, offline)
        for index, verdict in enumerate(result.verdicts):
            if verdict.remove:
                try:
                    _remove(config, verdict)
                except (OSError, SlapgridError) as exc:
                    log.error("could not remove %s %s: %s", verdict.kind, verdict.target, exc)
                    result.verdicts[index] = replace(verdict, remove=False, reason=str(exc))
                    result.status = ExitStatus.FAILED
    return result
