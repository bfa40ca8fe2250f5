"""Destroying a partition the master destroyed: stop, retention lock, `sbin/destroy`, wipe.

A partition is destroyed only once its retention lock has expired and its `sbin/destroy`
succeeded. Its directory is emptied, never removed: it stays the slot `slapgrid format`
made, same owner, mode 0750, with format's marker. Any failure keeps the partition for the
next run.
"""

from __future__ import annotations

import logging
import math
import os
from datetime import datetime
from pathlib import Path

from slapgrid.errors import SlapgridError
from slapgrid.node import layout
from slapgrid.node.config import NodeConfig
from slapgrid.node.files import atomic_write, read_text
from slapgrid.node.report.environment import Environment
from slapgrid.node.report.scripts import run_instance_script
from slapgrid.node.report.wipe import delete_certificates, empty_directory, empty_storage
from slapgrid.node.supervisor.control import Supervisor
from slapgrid.slap.client import SlapClient
from slapgrid.slap.errors import SlapError

log = logging.getLogger(__name__)

DESTROY_TIMEOUT = 600.0
DAY = 86400.0


class DestroyError(SlapgridError):
    """A partition could not be destroyed; it is kept and retried on the next run."""


def destroy_partition(
    config: NodeConfig,
    client: SlapClient,
    supervisor: Supervisor,
    partition_id: str,
    path: Path,
    *,
    env: Environment | None = None,
    timeout: float = DESTROY_TIMEOUT,
) -> bool:
    """Stop, honour the retention lock, run `sbin/destroy`, wipe, report `destroyed`.

    True when destroyed; False when the retention lock keeps the partition for now.
    Raises `DestroyError` (or `SupervisorError` when the partition cannot be stopped) and
    leaves the partition for the next run.
    """
    supervisor.stop_partition(partition_id)
    try:
        client.stopped(partition_id)
    except SlapError as exc:
        log.warning("%s: could not report it stopped: %s", partition_id, exc)
    try:
        until = retention_lock(path, env or Environment.current())
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
        delete_certificates(config, partition_id)
        empty_storage(config, path, partition_id)
        empty_directory(path, mode=0o750, keep=frozenset({layout.RESOURCE_FILE}))
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


def retention_lock(path: Path, env: Environment) -> float | None:
    """The date until which the partition must be kept, or None; starts the lock if due.

    As root, a new lock date file is given the partition's owner, like the rest of the
    partition.
    """
    now = env.clock()
    until, new = retention_decision(
        read_text(path / layout.RETENTION_DELAY_FILE),
        read_text(path / layout.RETENTION_DATE_FILE),
        now,
    )
    if new and until is not None:
        atomic_write(path / layout.RETENTION_DATE_FILE, repr(until), 0o644)
        if env.is_root:
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
