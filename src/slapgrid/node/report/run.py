"""`slapgrid report`: send this node's usage, then wipe the partitions the master destroyed.

Order, as the reference: the instances' report scripts, one usage journal, then destruction.
A partition is destroyed only once the usage documents in its directory were accepted (a failed
send keeps them, and the partition, for the next run), its retention lock has expired and its
`sbin/destroy` succeeded. Its directory is emptied, never removed: it stays the slot
`slapgrid format` made, same owner, mode 0750. Nothing is followed out of it: a symlink in a
partition is unlinked, whatever it points to.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import stat
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from slapgrid.errors import SlapgridError
from slapgrid.node import layout, safety
from slapgrid.node.config import NodeConfig
from slapgrid.node.files import atomic_write, read_text
from slapgrid.node.lock import hold
from slapgrid.node.planner import Kind, PartitionObservation, plan_destruction
from slapgrid.node.report.usage import (
    REPORT_DIR,
    SCRIPT_TIMEOUT,
    InvalidReport,
    ProcessTable,
    ReportFile,
    build_journal,
    collect_reports,
    delete_reports,
    measure_partition,
    partition_report_dirs,
    run_instance_script,
    run_report_scripts,
    usage_movements,
)
from slapgrid.node.state import StateStore
from slapgrid.node.supervisor.control import Supervisor
from slapgrid.node.supervisor.errors import SupervisorError
from slapgrid.slap.client import SlapClient
from slapgrid.slap.documents import Computer
from slapgrid.slap.errors import SlapError

log = logging.getLogger(__name__)

DESTROY_TIMEOUT = 600.0
DAY = 86400.0
_NO_FOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


class ReportError(SlapgridError):
    """The report run could not start, e.g. the master is unreachable."""


class DestroyError(SlapgridError):
    """A partition could not be destroyed; it is kept and retried on the next run."""


@dataclass
class ReportSummary:
    """The outcome of one run, as `slapgrid status` and the console show it."""

    usage: str = "nothing"  # "sent", "failed" or "nothing"
    movements: int = 0
    destroyed: list[str] = field(default_factory=list)
    postponed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or self.usage == "failed" else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": time.time(),
            "usage": self.usage,
            "movements": self.movements,
            "destroyed": self.destroyed,
            "postponed": self.postponed,
            "failed": self.failed,
            "exit_code": self.exit_code,
        }

    def line(self) -> str:
        usage = f"usage {self.usage}"
        if self.movements:
            usage += f" ({self.movements} movements)"
        parts = [usage]
        for name, items in (("destroyed", self.destroyed), ("postponed", self.postponed)):
            if items:
                parts.append(f"{name}: {', '.join(items)}")
        if self.failed:
            parts.append(f"failed: {', '.join(self.failed)}")
        return "report: " + "; ".join(parts)


def run_report(
    config: NodeConfig,
    client: SlapClient,
    *,
    supervisor: Supervisor | None = None,
    script_timeout: float = SCRIPT_TIMEOUT,
    destroy_timeout: float = DESTROY_TIMEOUT,
) -> int:
    """Report usage and destroy what the master destroyed; 0, or 1 if anything failed.

    Holds the partitions lock shared with `slapgrid instance`. An unreachable master is a
    `ReportError` (nothing can be done without the computer document).
    """
    supervisor = supervisor or Supervisor(config.instance_root)
    with hold(layout.partitions_lock(config.instance_root), "instance/report"):
        try:
            computer = client.computer()
        except SlapError as exc:
            raise ReportError(
                f"cannot get the partitions of {config.computer_id} from the master: {exc}"
            ) from None
        summary = ReportSummary()
        busy = _busy_partitions(config, computer, summary)
        for partition_id, path in busy.items():
            failures = run_report_scripts(path, script_timeout)
            if failures:
                summary.failed[partition_id] = failures[0]
                _tell_error(client, partition_id, "\n".join(failures))
        unsent = _send_usage(config, client, supervisor, busy, summary)
        observed = {partition_id: PartitionObservation(exists=True) for partition_id in busy}
        for action in plan_destruction(computer, observed):
            if action.kind == Kind.DESTROY:
                if action.target in unsent:
                    log.warning(
                        "%s: destruction postponed: its usage documents were not accepted",
                        action.target,
                    )
                    summary.postponed.append(action.target)
                    continue
                _destroy(config, client, supervisor, action.target, busy, summary, destroy_timeout)
        StateStore(config.instance_root).record_run("report", summary.as_dict())
    log.info(summary.line())
    return summary.exit_code


def _busy_partitions(
    config: NodeConfig, computer: Computer, summary: ReportSummary
) -> dict[str, Path]:
    """Partitions holding an instance and present on disk, by id."""
    busy = {}
    for partition in computer.partitions:
        if partition.is_free:
            continue
        try:
            path = layout.partition(config.instance_root, partition.partition_id).root
        except safety.UnsafeValueError as exc:
            log.error("Skipping a partition: %s", exc)
            summary.failed[repr(partition.partition_id)] = str(exc)
            continue
        if path.is_dir():
            busy[partition.partition_id] = path
        else:
            log.info("%s: no directory on this node, nothing to report", partition.partition_id)
    return busy


def _tell_error(client: SlapClient, partition_id: str, message: str) -> None:
    try:
        client.instance_error(partition_id, message)
    except SlapError as exc:
        log.warning("%s: could not report the error to the master: %s", partition_id, exc)


# --------------------------------------------------------------------------- usage


def _group_pids(supervisor: Supervisor, running: bool, partition_id: str) -> list[int]:
    if not running:
        return []
    try:
        return [info.pid for info in supervisor.process_info(partition_id) if info.pid > 0]
    except SupervisorError as exc:
        log.warning("%s: cannot list its processes: %s", partition_id, exc)
        return []


def _computer_report_dir(config: NodeConfig) -> tuple[str, ...] | None:
    """`var/xml_report/<computer id>`, if the id can name a directory."""
    try:
        return (*REPORT_DIR, safety.partition_id(config.computer_id))
    except safety.UnsafeValueError:
        return None


def _send_usage(
    config: NodeConfig,
    client: SlapClient,
    supervisor: Supervisor,
    busy: dict[str, Path],
    summary: ReportSummary,
) -> set[str]:
    """Measure, collect, send one journal; consume the documents only once it is accepted.

    Returns the partitions whose own directory still holds unsent documents: destroying
    them now would lose that usage.
    """
    running = supervisor.is_running()
    table = ProcessTable.snapshot()
    movements = []
    files: list[ReportFile] = []
    inside: set[str] = set()
    for partition_id, path in busy.items():
        pids = _group_pids(supervisor, running, partition_id)
        usage = measure_partition(partition_id, path, pids, table)
        movements += usage_movements(usage)
        for base, parts in partition_report_dirs(config.instance_root, path, partition_id):
            found = collect_reports(base, parts, partition_id)
            files += found
            movements += [movement for file in found for movement in file.movements]
            if found and base == path:
                inside.add(partition_id)
    computer_dir = _computer_report_dir(config)
    journals = collect_reports(config.instance_root, computer_dir, None) if computer_dir else []
    files += journals
    if not movements and not journals:
        log.info("No usage to report")
        return set()
    try:
        journal = build_journal(
            config.computer_id,
            movements,
            stop_date=datetime.now(),
            journals=[file.journal for file in journals if file.journal is not None],
        )
        client.use_computer(journal)
    except (InvalidReport, SlapError) as exc:
        summary.usage = "failed"
        log.error("Usage not reported, documents kept for the next run: %s", exc)
        return inside
    summary.usage, summary.movements = "sent", len(movements)
    deleted = delete_reports(files)
    log.info(
        "Usage reported: %d movements of %d partitions, %d computer journals, "
        "%d instance documents consumed",
        len(movements),
        len(busy),
        len(journals),
        deleted,
    )
    return set()


# --------------------------------------------------------------------------- destruction


def _destroy(
    config: NodeConfig,
    client: SlapClient,
    supervisor: Supervisor,
    partition_id: str,
    busy: dict[str, Path],
    summary: ReportSummary,
    timeout: float,
) -> None:
    """Destroy one partition; its failure is reported and never stops the others."""
    try:
        done = destroy_partition(
            config, client, supervisor, partition_id, busy[partition_id], timeout=timeout
        )
    except SlapgridError as exc:
        log.error("%s: destruction failed: %s", partition_id, str(exc).splitlines()[0])
        summary.failed[partition_id] = str(exc)
        _tell_error(client, partition_id, f"Destruction failed: {exc}")
        return
    (summary.destroyed if done else summary.postponed).append(partition_id)


def destroy_partition(
    config: NodeConfig,
    client: SlapClient,
    supervisor: Supervisor,
    partition_id: str,
    path: Path,
    *,
    now: float | None = None,
    timeout: float = DESTROY_TIMEOUT,
) -> bool:
    """Stop, honour the retention lock, run `sbin/destroy`, wipe, report `destroyed`.

    True when destroyed; False when the retention lock keeps the partition for now.
    Raises `DestroyError` (or `SupervisorError` when the partition cannot be stopped) and
    leaves the partition for the next run.
    """
    if supervisor.is_running():
        supervisor.stop_partition(partition_id)
    else:
        supervisor.remove_partition(partition_id)
    try:
        client.stopped(partition_id)
    except SlapError as exc:
        log.warning("%s: could not report it stopped: %s", partition_id, exc)
    try:
        until = retention_lock(path, time.time() if now is None else now)
    except OSError as exc:
        raise DestroyError(f"cannot start the retention lock of {path}: {exc}") from None
    if until is not None:
        log.info(
            "%s: destruction postponed: retention lock until %s",
            partition_id,
            datetime.fromtimestamp(until).isoformat(" ", "seconds"),
        )
        return False
    try:
        _run_destroy_script(path, timeout)
        _delete_certificates(config, partition_id)
        _empty_storage(config, path, partition_id)
        empty_directory(path, mode=0o750)
    except (OSError, RecursionError) as exc:
        raise DestroyError(f"cannot wipe {path}: {exc}") from None
    try:
        client.destroyed(partition_id)
    except SlapError as exc:
        raise DestroyError(f"{path} emptied, but the master was not told: {exc}") from None
    log.info("%s: destroyed (directory emptied, reported destroyed)", partition_id)
    return True


def retention_decision(
    delay_text: str | None, date_text: str | None, now: float
) -> tuple[float | None, bool]:
    """(lock date or None, whether that date is new and must be written).

    A positive delay (days) with no date yet starts the lock now; a date in the past
    releases it. Unreadable values keep the partition: destroying data is not undone.
    """

    def number(text: str | None, name: str) -> float | None:
        if text is None or not text.strip():
            return None
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise DestroyError(f"{name} holds {text.strip()[:40]!r}, not a number")
        return value

    date = number(date_text, layout.RETENTION_DATE_FILE)
    if date is not None:
        return date, False
    delay = number(delay_text, layout.RETENTION_DELAY_FILE)
    if delay is None or delay <= 0:
        return None, False
    return now + delay * DAY, True


def retention_lock(path: Path, now: float) -> float | None:
    """The date until which the partition must be kept, or None; starts the lock if due."""
    until, new = retention_decision(
        read_text(path / layout.RETENTION_DELAY_FILE),
        read_text(path / layout.RETENTION_DATE_FILE),
        now,
    )
    if new and until is not None:
        atomic_write(path / layout.RETENTION_DATE_FILE, repr(until), 0o644)
        if os.geteuid() == 0:
            owner = path.stat()
            os.chown(path / layout.RETENTION_DATE_FILE, owner.st_uid, owner.st_gid)
    return until if until is not None and now < until else None


def _run_destroy_script(path: Path, timeout: float) -> None:
    """`P/sbin/destroy`, if the instance has one: as the owner, cwd P, clean environment."""
    script = path / "sbin" / "destroy"
    if not script.exists():
        return
    log.info("Running %s", script)
    problem = run_instance_script([str(script)], path, cwd=path, timeout=timeout)
    if problem is not None:
        raise DestroyError(f"{script} failed: {problem}")


def _delete_certificates(config: NodeConfig, partition_id: str) -> None:
    repository = config.certificate_repository_path
    if repository is None:
        return
    for path in layout.certificate_files(repository, partition_id):
        path.unlink(missing_ok=True)


def _empty_storage(config: NodeConfig, path: Path, partition_id: str) -> None:
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


def empty_directory(path: Path, *, mode: int | None = None) -> None:
    """Delete everything inside `path`, keeping `path` itself (and its owner).

    Works on descriptors, never following a symlink: a link is removed, not what it points
    to, and a directory swapped for a link mid-way is unlinked. `path` gets `mode`, or at
    least u+rwx, and so does every directory before it is emptied (read-only trees go too).
    """
    fd = os.open(path, _NO_FOLLOW_DIR)
    try:
        os.fchmod(fd, mode if mode is not None else stat.S_IMODE(os.fstat(fd).st_mode) | 0o700)
        _empty(fd)
    finally:
        os.close(fd)


def _empty(dir_fd: int) -> None:
    with os.scandir(dir_fd) as entries:
        listing = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
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
