"""Every path and marker name the agent uses on disk, in one place (as pip's `locations`).

The names are the reference agent's where one exists (`.completed`, `.timestamp`,
`.slapos-resource`, `etc/supervisord.conf`, `<pid>.crt`), so a node can move between the two
agents; what is slapgrid's own lives under a `.slapgrid` folder. Nothing here touches the disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from slapgrid.node import safety

AGENT_DIR = ".slapgrid"
"""slapgrid's own folder: in the instance root, the software root, each SR and partition."""

# ----------------------------------------------------------------------- Software Releases
COMPLETED = ".completed"
"""In an SR directory: the build finished (written last, atomically)."""
SOFTWARE_PROFILE = "buildout.cfg"
INSTANCE_PROFILES = ("instance.cfg", "template.cfg")
"""An SR's instance profile, by the names the reference looks for, in order."""


def software_dir(software_root: Path, url: str) -> Path:
    """`software_root/<md5 of the URL>`: where a Software Release is built."""
    return software_root / safety.software_hash(safety.software_release_url(url))


def software_lock(software_root: Path, url: str) -> Path:
    """The lock a run holds while it builds or removes this Software Release."""
    return software_dir_lock(software_root, safety.software_hash(url))


def software_dir_lock(software_root: Path, name: str) -> Path:
    """The same lock, by the release's directory name (`slapgrid prune` knows no URL)."""
    return software_root / AGENT_DIR / "locks" / f"{name}.lock"


def build_log(software: Path) -> Path:
    return software / AGENT_DIR / "build.log"


def cache_transfers(software_root: Path) -> Path:
    """Where archives from and to the binary cache are made and unpacked: on the same file
    system as the releases, so an unpacked release is moved in place with one rename."""
    return software_root / AGENT_DIR / "cache"


# ------------------------------------------------------------------------- instance root
def state_dir(instance_root: Path) -> Path:
    """The agent's own files under the instance root: locks, memory, status."""
    return instance_root / AGENT_DIR


def state_file(instance_root: Path) -> Path:
    """Memory across runs: failures (back-off) and the last runs."""
    return state_dir(instance_root) / "state.json"


def partitions_lock(instance_root: Path) -> Path:
    """Held by `instance` and `report`: they never change partitions at the same time."""
    return state_dir(instance_root) / "partitions.lock"


def daemon_lock(instance_root: Path) -> Path:
    return state_dir(instance_root) / "daemon.lock"


def daemon_status(instance_root: Path) -> Path:
    return state_dir(instance_root) / "daemon.json"


def computer_definition(instance_root: Path) -> Path:
    """What `format` last applied: partitions, users, addresses."""
    return state_dir(instance_root) / "computer.json"


@dataclass(frozen=True)
class SupervisorPaths:
    """The node's supervisord: its configuration, socket, logs and pid file."""

    instance_root: Path

    @property
    def conf(self) -> Path:
        return self.instance_root / "etc" / "supervisord.conf"

    @property
    def conf_dir(self) -> Path:
        return self.instance_root / "etc" / "supervisord.conf.d"

    def partition_conf(self, pid: str) -> Path:
        """A partition's program file: its deployment writes it, a stop removes it."""
        return self.conf_dir / f"{pid}.conf"

    @property
    def socket(self) -> Path:
        return self.instance_root / "sv.sock"

    @property
    def log_dir(self) -> Path:
        return self.instance_root / "var" / "log"

    @property
    def log(self) -> Path:
        return self.log_dir / "supervisord.log"

    @property
    def watchdog_log(self) -> Path:
        return self.log_dir / "watchdog.log"

    @property
    def pid_file(self) -> Path:
        return self.instance_root / "var" / "run" / "supervisord.pid"


# ---------------------------------------------------------------------------- partitions
RESOURCE_FILE = ".slapos-resource"
"""Written by `format` in each partition it made: what marks a directory as a partition."""
TIMESTAMP = ".timestamp"
"""The master's timestamp of the last successful deployment (written last)."""
BANG_MEMORY = ".slapos_latest_bang_timestamp"
"""The deployment timestamp the watchdog last banged for."""
RETENTION_DELAY_FILE = ".slapos-retention-lock-delay"
"""Days, frozen at the first deployment from the partition's `retention_delay` filter."""
RETENTION_DATE_FILE = ".slapos-retention-lock-date"
"""Epoch seconds before which the partition is kept, set at the first destruction attempt."""


@dataclass(frozen=True)
class PartitionPaths:
    """The files of one partition that the agent reads or writes."""

    root: Path

    @property
    def pid(self) -> str:
        return self.root.name

    @property
    def timestamp(self) -> Path:
        return self.root / TIMESTAMP

    @property
    def resource(self) -> Path:
        return self.root / RESOURCE_FILE

    @property
    def bang_memory(self) -> Path:
        return self.root / BANG_MEMORY

    @property
    def agent_dir(self) -> Path:
        return self.root / AGENT_DIR

    @property
    def log(self) -> Path:
        return self.agent_dir / "log" / "instance.log"

    @property
    def buildout_cfg(self) -> Path:
        return self.root / "buildout.cfg"

    @property
    def software_link(self) -> Path:
        return self.root / "software_release"

    @property
    def error_log(self) -> Path:
        return self.root / f".slapgrid-{self.pid}-error.log"

    @property
    def request_transaction(self) -> Path:
        """Where the instance's `request` recipes list what they requested in this run."""
        return self.root / f".slapos-request-transaction-{self.pid}"

    @property
    def retention_delay(self) -> Path:
        return self.root / RETENTION_DELAY_FILE

    @property
    def retention_date(self) -> Path:
        return self.root / RETENTION_DATE_FILE

    def etc(self, folder: str) -> Path:
        """`etc/run`, `etc/service`, `etc/plugin`, `etc/promise`, `etc/report`, …"""
        return self.root / "etc" / folder

    @property
    def promise_dir(self) -> Path:
        return self.agent_dir / "promise"

    def promise_result(self, title: str) -> Path:
        return self.promise_dir / "result" / f"{title}.status.json"

    def promise_cache(self, title: str) -> Path:
        return self.promise_dir / "cache" / title


def partition(instance_root: Path, partition_id: str) -> PartitionPaths:
    """A partition's paths, from a master-given id checked before it names a path."""
    return PartitionPaths(safety.inside(instance_root, safety.partition_id(partition_id)))


def certificate_files(repository: Path, partition_id: str) -> tuple[Path, Path]:
    """(key, certificate) of a partition in the certificate repository."""
    pid = safety.partition_id(partition_id)
    return safety.inside(repository, f"{pid}.key"), safety.inside(repository, f"{pid}.crt")
