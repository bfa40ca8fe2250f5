"""A computer partition on disk: its paths, what it holds, and the buildout.cfg it runs.

The generated profile is the SR's instance profile plus a tail that tells the instance who
and where it is (`[slap-connection]`, and `[slap_connection]` for old recipes), exactly the
sections the reference writes, so existing Software Releases run unchanged.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import stat
from collections.abc import Mapping
from pathlib import Path

from slapgrid.node import layout, safety
from slapgrid.node.config import NodeConfig
from slapgrid.node.files import atomic_write, read_text
from slapgrid.node.planner import PartitionObservation
from slapgrid.node.process_states import ProcessState, Services
from slapgrid.slap.documents import ComputerPartition

PARTITION_MODE = 0o750


def check_partition(path: Path, expected_owner_uid: int | None) -> list[str]:
    """What is wrong with a partition directory, in words; empty when it is usable.

    A symlink is refused, not followed: it would lend the partition another directory.
    """
    try:
        status = path.lstat()
    except FileNotFoundError:
        return [f"partition directory {path} does not exist (run `slapgrid format`)"]
    except OSError as exc:
        return [f"cannot inspect partition directory {path}: {exc.strerror}"]
    if stat.S_ISLNK(status.st_mode):
        return [f"{path} is a symbolic link, not a partition directory"]
    if not stat.S_ISDIR(status.st_mode):
        return [f"{path} is not a directory"]
    problems = []
    if expected_owner_uid is not None and status.st_uid != expected_owner_uid:
        problems.append(
            f"{path} belongs to {_user_label(status.st_uid)}, "
            f"expected {_user_label(expected_owner_uid)}"
        )
    mode = stat.S_IMODE(status.st_mode)
    if mode != PARTITION_MODE:
        problems.append(f"{path} has mode {mode:04o}, expected {PARTITION_MODE:04o}")
    return problems


def _user_label(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def is_locked(lock: Path) -> bool:
    """Whether a process holds the flock on `lock` (probed with a shared lock, let go at once)."""
    try:
        descriptor = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)
    return False


def software_periodicity(software: Path) -> int | None:
    """The SR's own `periodicity` file overrides `maximum_periodicity` for its partitions."""
    text = read_text(software / "periodicity")
    try:
        return int(text.strip()) if text else None
    except ValueError:
        return None


def observe_partition(
    config: NodeConfig,
    partition: ComputerPartition,
    processes: Mapping[str, tuple[ProcessState, ...]] | None = None,
) -> PartitionObservation:
    """What is on disk for this partition, and what supervisord runs of it (`processes`,
    every group's programs; None when supervisord was not read), as the planner needs it."""
    try:
        paths = layout.partition(config.instance_root, partition.partition_id)
        url = partition.software_release_url
        software = layout.software_dir(config.software_root, url) if url else None
    except safety.UnsafeValueError as exc:
        return PartitionObservation(exists=False, problem=str(exc))
    if not paths.root.is_dir():
        return PartitionObservation(exists=False)
    if partition.is_free:
        names = {entry.name for entry in os.scandir(paths.root)}
        leftovers = bool(names & {layout.TIMESTAMP, layout.AGENT_DIR})
        return PartitionObservation(exists=True, leftovers=leftovers)
    try:
        deployed_at: float | None = paths.timestamp.stat().st_mtime
    except FileNotFoundError:
        deployed_at = None
    timestamp = read_text(paths.timestamp)
    services = None
    if processes is not None:
        declared = layout.SupervisorPaths(config.instance_root).partition_conf(paths.root.name)
        services = Services(declared.is_file(), processes.get(paths.root.name, ()))
    built = bool(software and (software / layout.COMPLETED).exists())
    return PartitionObservation(
        exists=True,
        deployed_timestamp=timestamp.strip() if timestamp else None,
        deployed_at=deployed_at,
        software_built=built,
        software_building=bool(
            url and not built and is_locked(layout.software_lock(config.software_root, url))
        ),
        periodicity=software_periodicity(software) if software else None,
        services=services,
    )


def instance_profile(software: Path) -> Path | None:
    for name in layout.INSTANCE_PROFILES:
        candidate = software / name
        if candidate.is_file():
            return candidate
    return None


def _lines(name: str, values: tuple[str, ...]) -> str:
    return "".join(f"\n  {safety.buildout_value(name, value)}" for value in values)


def render_buildout(
    config: NodeConfig,
    partition: ComputerPartition,
    template: str,
    *,
    key_file: Path | None,
    cert_file: Path | None,
) -> str:
    """The instance profile followed by the sections describing this partition."""
    url = safety.software_release_url(partition.software_release_url or "")
    values = {
        "computer-id": partition.computer_id,
        "partition-id": safety.partition_id(partition.partition_id),
        "server-url": config.master_url,
        "software-release-url": url,
        "key-file": str(key_file or ""),
        "cert-file": str(cert_file or ""),
    }
    safe = {name: safety.buildout_value(name, value) for name, value in values.items()}
    state = safety.buildout_value("requested-state", partition.requested_state)
    connection = "".join(f"{name} = {value}\n" for name, value in safe.items())
    legacy = "".join(f"{name.replace('-', '_')} = {value}\n" for name, value in safe.items())
    return (
        f"{template.rstrip()}\n\n"
        "[buildout]\n"
        "bin-directory = ${buildout:directory}/sbin\n"
        "offline = true\n\n"
        "[slap-connection]\n"
        f"{connection}"
        f"shared-part-list ={_lines('shared_part_list', config.shared_part_list)}\n"
        f"build-time-part-list ={_lines('build_time_part_list', config.build_time_part_list)}\n"
        f"requested-state = {state}\n\n"
        "[slap_connection]\n"
        "# kept for old recipes\n"
        f"{legacy}\n"
        "[storage-configuration]\n"
        f"storage-home = {safety.buildout_value('storage-home', config.instance_storage_home)}\n\n"
        "[network-information]\n"
        "global-ipv4-network = "
        f"{safety.buildout_value('ipv4_global_network', config.ipv4_global_network)}\n"
    )


def write_certificate(
    repository: Path, partition_id: str, certificate: str, key: str, owner: tuple[int, int]
) -> tuple[Path, Path]:
    """Partition certificate and key, 0400, owned by the partition user, rewritten on change."""
    written = []
    for suffix, content in ((".crt", certificate), (".key", key)):
        path = safety.inside(repository, safety.partition_id(partition_id) + suffix)
        if read_text(path) != content:
            if path.exists():
                path.chmod(0o600)
            atomic_write(path, content, 0o400)
            if os.geteuid() == 0:
                os.chown(path, *owner)
        written.append(path)
    return written[0], written[1]
