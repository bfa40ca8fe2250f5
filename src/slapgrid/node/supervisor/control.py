"""The node's supervisord: one per instance root, driven over XML-RPC on a unix socket.

A partition is *started* when its group is known and asked to start, and *stopped* when its
file is gone and supervisord has forgotten the group. Programs are `autostart=false`: after a
reboot they come back through the next instance pass (which starts every started partition
whose programs are down) or the offline-mode `start_all()`. supervisord is launched only when
a partition has a program file: never to supervise nothing. The files are
rendered by `conf`, the daemon started and stopped by `launch`, spoken to through `rpc`.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from supervisor.xmlrpc import Faults

import slapgrid
from slapgrid.node.files import write_if_changed
from slapgrid.node.layout import SupervisorPaths
from slapgrid.node.process_states import ProcessState, running_since
from slapgrid.node.supervisor import launch
from slapgrid.node.supervisor.conf import (
    SERVICE_SUFFIX,
    WATCHDOG,
    check_name,
    partition_programs,
    program_identity,
    render_partition_conf,
    render_supervisord_conf,
)
from slapgrid.node.supervisor.errors import SupervisorError, SupervisorFault
from slapgrid.node.supervisor.rpc import SupervisorRpc

log = logging.getLogger(__name__)

_RELOADING = threading.Lock()
"""One reload at a time in this process: reloadConfig, then acting on its answer."""


class ProcessInfo(NamedTuple):
    """One process of a partition as `slapgrid status` shows it."""

    name: str
    state: str
    pid: int


@dataclass(frozen=True)
class ReloadSummary:
    """Groups supervisord learned, re-read and forgot in one `reload()`."""

    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


class Supervisor:
    """The supervisord of one instance root."""

    def __init__(
        self,
        instance_root: Path | str,
        *,
        python: str | None = None,
        rpc_timeout: float = 30.0,
        may_launch: bool = True,
    ) -> None:
        self.instance_root = Path(instance_root).absolute()
        self.paths = SupervisorPaths(self.instance_root)
        self.python = python or sys.executable
        self.rpc = SupervisorRpc(self.paths.socket, rpc_timeout)
        self.may_launch = may_launch  # False: `forbid_supervisord_automatic_launch`
        self._launching = threading.Lock()  # parallel deployments launch one daemon

    def partition_conf(self, pid: str) -> Path:
        return self.paths.partition_conf(check_name(pid, "partition id"))

    # ----------------------------------------------------------------- files

    def ensure_config(
        self,
        master_url: str,
        computer_id: str,
        certificate_repository_path: Path | str | None = None,
    ) -> bool:
        """Create the node-level directories and write `supervisord.conf`; True if rewritten.

        A running supervisord applies a changed watchdog on the next `reload()`.
        """
        root = self.instance_root
        try:
            (root / "var").mkdir(parents=True, exist_ok=True)
            (root / "var").chmod(0o755)
            paths = self.paths
            for directory in (
                paths.log_dir,
                paths.pid_file.parent,
                paths.conf.parent,
                paths.conf_dir,
            ):
                directory.mkdir(parents=True, exist_ok=True)
                directory.chmod(0o700)
            text = render_supervisord_conf(
                root,
                python=self.python,
                master_url=master_url,
                computer_id=computer_id,
                certificate_repository_path=(
                    Path(certificate_repository_path).absolute()
                    if certificate_repository_path
                    else None
                ),
                pythonpath=str(Path(slapgrid.__file__).resolve().parents[1]),
            )
            return write_if_changed(self.paths.conf, text, 0o600)
        except OSError as exc:
            raise SupervisorError(f"cannot write supervisord configuration: {exc}") from None

    def write_partition(
        self, pid: str, partition_path: Path | str, owner_uid: int | None = None
    ) -> bool:
        """(Re)write the program file of a partition; True if it changed.

        `owner_uid` defaults to the owner of the partition directory. A partition without
        any run script or service has no file (and hence no group).
        """
        partition_path = Path(partition_path).absolute()
        programs = partition_programs(partition_path)
        if not programs:
            log.warning("No runners nor services found for partition %r", pid)
            return self.remove_partition(pid)
        if owner_uid is None:
            owner_uid = partition_path.stat().st_uid
        user, environment = program_identity(owner_uid, partition_path)
        text = render_partition_conf(
            pid, partition_path, programs, user=user, environment=environment
        )
        try:
            return write_if_changed(self.partition_conf(pid), text, 0o600)
        except OSError as exc:
            raise SupervisorError(f"cannot write supervisord program file: {exc}") from None

    def remove_partition(self, pid: str) -> bool:
        """Delete the program file of a partition; True if there was one."""
        try:
            self.partition_conf(pid).unlink()
        except FileNotFoundError:
            return False
        return True

    # ----------------------------------------------------------------- daemon

    def state(self) -> str | None:
        """supervisord's state name (RUNNING, SHUTDOWN, …), None when nobody answers."""
        return self.rpc.state()

    def is_running(self) -> bool:
        return self.state() == "RUNNING"

    def has_partitions(self) -> bool:
        """Whether a partition has a program file: something for supervisord to supervise."""
        try:
            return any(self.paths.conf_dir.glob("*.conf"))
        except OSError:
            return False

    def ensure_running(self, timeout: float = 15.0) -> None:
        """Launch supervisord unless one already answers on the socket; wait for RUNNING."""
        with self._launching:
            if self.state() == "RUNNING":
                self._ensure_watchdog()
                return
            if not self.may_launch:
                raise SupervisorError(
                    f"supervisord is not running on {self.paths.socket} and "
                    "forbid_supervisord_automatic_launch forbids launching it"
                )
            launch.start(self.paths, self.rpc, self.python, timeout)

    def ensure_running_if_needed(self) -> None:
        """Launch supervisord when a partition has programs and launching is allowed; an
        empty supervisord (every deployment failed, no busy partition) is never started."""
        if self.may_launch and self.has_partitions():
            self.ensure_running()

    def _ensure_watchdog(self) -> None:
        """Restart a dead watchdog; re-read the configuration if supervisord lacks it."""
        name = f"{WATCHDOG}:{WATCHDOG}"
        try:
            info = self.rpc.call("getProcessInfo", name)
        except SupervisorFault as fault:
            if fault.code != Faults.BAD_NAME:
                raise
            self.reload()
            return
        if info["statename"] not in ("RUNNING", "STARTING"):
            log.warning("The supervisord watchdog was %s; starting it", info["statename"])
            self.rpc.call("startProcess", name, False)

    def shutdown(self, timeout: float = launch.SHUTDOWN_TIMEOUT) -> None:
        """Stop every program and supervisord itself; wait until it is gone."""
        launch.shutdown(self.rpc, timeout)

    # ----------------------------------------------------------------- groups

    def reload(self) -> ReloadSummary:
        """Make supervisord's groups match the files (supervisorctl's `update`).

        Removed groups are stopped (waiting) and removed; changed groups are stopped,
        removed and re-added (not started); new groups are added.
        """
        with _RELOADING:  # parallel deployments would each add what the first one added
            [[added, changed, removed]] = self.rpc.call("reloadConfig")
            for group in removed:
                self._stop_group(group)
                self._remove_group(group)
            for group in changed:
                self._stop_group(group)
                self._remove_group(group)
                self._add_group(group)
            for group in added:
                self._add_group(group)
        return ReloadSummary(tuple(added), tuple(changed), tuple(removed))

    def _add_group(self, group: str) -> None:
        try:
            self.rpc.call("addProcessGroup", group)
        except SupervisorFault as fault:
            if fault.code != Faults.ALREADY_ADDED:  # another agent process's reload did it
                raise

    def _stop_group(self, group: str) -> None:
        try:
            results = self.rpc.call("stopProcessGroup", group, True, timeout=180.0)
        except SupervisorFault as fault:
            if fault.code == Faults.BAD_NAME:
                return
            raise
        for result in results:
            if result["status"] != Faults.SUCCESS:
                log.warning(
                    "Process %s:%s did not stop: %s",
                    group,
                    result["name"],
                    result["description"],
                )

    def _remove_group(self, group: str, tries: int = 10) -> None:
        for attempt in range(tries):
            try:
                self.rpc.call("removeProcessGroup", group)
                return
            except SupervisorFault as fault:
                if fault.code == Faults.BAD_NAME:
                    return
                if fault.code != Faults.STILL_RUNNING or attempt == tries - 1:
                    raise
            time.sleep(0.5)

    def start_partition(self, pid: str) -> None:
        """Ask supervisord to start every stopped process of the group; do not wait."""
        try:
            self.rpc.call("startProcessGroup", check_name(pid, "partition id"), False)
        except SupervisorFault as fault:
            if fault.code != Faults.BAD_NAME:
                raise
            log.info("Nothing to start for partition %r", pid)

    def stop_partition(self, pid: str) -> None:
        """Forget the partition: delete its program file and, when supervisord runs, reload
        (stops its processes); a supervisord that is down is not launched for this."""
        self.remove_partition(pid)
        if self.is_running():
            self.reload()

    def start_all(self) -> None:
        """Start every process of every group without waiting (offline mode)."""
        self.rpc.call("startAllProcesses", False)

    def process_info(self, pid: str) -> list[ProcessInfo]:
        """The processes of a partition's group, empty when supervisord does not know it."""
        return [
            ProcessInfo(info["name"], info["statename"], info["pid"])
            for info in self.rpc.call("getAllProcessInfo")
            if info["group"] == pid
        ]

    def process_states(self) -> dict[str, tuple[ProcessState, ...]]:
        """Every group's programs, read with one call: a pass must stay cheap."""
        groups: dict[str, list[ProcessState]] = {}
        for info in self.rpc.call("getAllProcessInfo"):
            name = info["name"]
            state = ProcessState(
                name,
                info["statename"],
                info["description"],
                name.endswith(SERVICE_SUFFIX),
                float(info["start"]),
            )
            groups.setdefault(info["group"], []).append(state)
        return {group: tuple(states) for group, states in groups.items()}

    def running_since(self) -> dict[str, float]:
        """When each group's services last (re)started (`running_since` of its programs)."""
        return {group: running_since(states) for group, states in self.process_states().items()}

    def supervisorctl(self, args: Sequence[str]) -> int:
        """Run supervisor's own supervisorctl against this node's daemon; its exit code."""
        argv = [self.python, "-m", "supervisor.supervisorctl", "-c", str(self.paths.conf), *args]
        try:
            return subprocess.run(argv, check=False).returncode
        except OSError as exc:
            raise SupervisorError(f"cannot run supervisorctl: {exc}") from None
