"""Usage to the master: measure, collect, send one journal, consume what was sent.

One `useComputer` per run carries the measured movements of every busy partition, the
`<consumption>` documents the instances wrote, and the ready computer journals.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from slapgrid.node import safety
from slapgrid.node.config import NodeConfig
from slapgrid.node.report.environment import Environment
from slapgrid.node.report.measure import ProcessTable, measure_partition, usage_movements
from slapgrid.node.report.usage_files import (
    REPORT_DIR,
    UsageFile,
    collect_usage_files,
    delete_usage_files,
    partition_usage_dirs,
)
from slapgrid.node.supervisor.control import Supervisor
from slapgrid.node.supervisor.errors import SupervisorError
from slapgrid.slap.client import SlapClient
from slapgrid.slap.errors import SlapError
from slapgrid.slap.tioxml import InvalidUsage, build_journal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UsageDelivery:
    """What became of this run's usage; `unsent` guards destruction against losing it."""

    status: str = "nothing"  # "sent", "failed" or "nothing"
    movements: int = 0
    unsent: frozenset[str] = field(default_factory=frozenset)  # partitions keeping documents


def _group_pids(supervisor: Supervisor, running: bool, partition_id: str) -> list[int]:
    if not running:
        return []
    try:
        return [info.pid for info in supervisor.process_info(partition_id) if info.pid > 0]
    except SupervisorError as exc:
        log.warning("%s: cannot list its processes: %s", partition_id, exc)
        return []


def _computer_usage_dir(config: NodeConfig) -> tuple[str, ...] | None:
    """`var/xml_report/<computer id>`, if the id can name a directory."""
    try:
        return (*REPORT_DIR, safety.partition_id(config.computer_id))
    except safety.UnsafeValueError:
        return None


def send_usage(
    config: NodeConfig,
    client: SlapClient,
    supervisor: Supervisor,
    busy: dict[str, Path],
    env: Environment,
) -> UsageDelivery:
    """Measure, collect, send one journal; consume the documents only once it is accepted.

    A partition whose own directory still holds unsent documents is named in `unsent`:
    destroying it now would lose that usage.
    """
    running = supervisor.is_running()
    table = ProcessTable.snapshot()
    movements = []
    files: list[UsageFile] = []
    inside: set[str] = set()
    for partition_id, path in busy.items():
        pids = _group_pids(supervisor, running, partition_id)
        usage = measure_partition(partition_id, path, pids, table, env)
        movements += usage_movements(usage)
        for base, parts in partition_usage_dirs(config.instance_root, path, partition_id):
            found = collect_usage_files(base, parts, partition_id)
            files += found
            movements += [movement for file in found for movement in file.movements]
            if found and base == path:
                inside.add(partition_id)
    computer_dir = _computer_usage_dir(config)
    journals = collect_usage_files(config.instance_root, computer_dir, None) if computer_dir else []
    files += journals
    if not movements and not journals:
        log.info("No usage to report")
        return UsageDelivery()
    try:
        journal = build_journal(
            config.computer_id,
            movements,
            stop_date=datetime.fromtimestamp(env.clock()),
            journals=[file.journal for file in journals if file.journal is not None],
        )
        client.use_computer(journal)
    except (InvalidUsage, SlapError) as exc:
        log.error("Usage not reported, documents kept for the next run: %s", exc)
        return UsageDelivery("failed", unsent=frozenset(inside))
    deleted = delete_usage_files(files)
    log.info(
        "Usage reported: %d movements of %d partitions, %d computer journals, "
        "%d instance documents consumed",
        len(movements),
        len(busy),
        len(journals),
        deleted,
    )
    return UsageDelivery("sent", len(movements))
