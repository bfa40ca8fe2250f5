"""What `slapgrid report` will do, as `--dry-run`, `slapgrid plan` and the run itself see it.

One function, so the plan a user is shown is the plan the run follows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from slapgrid.node import layout, safety
from slapgrid.node.config import NodeConfig
from slapgrid.node.planner import Action, PartitionObservation, plan_destruction
from slapgrid.slap.documents import Computer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportPlan:
    busy: dict[str, Path]  # partitions holding an instance and present on disk, by id
    unusable: dict[str, str]  # partitions whose id cannot name a directory: why
    actions: list[Action]  # destructions, each with its reason


def plan_report(config: NodeConfig, computer: Computer) -> ReportPlan:
    """Partitions to report usage for and to destroy; looks at the disk, changes nothing."""
    busy: dict[str, Path] = {}
    unusable: dict[str, str] = {}
    for partition in computer.partitions:
        if partition.is_free:
            continue
        try:
            path = layout.partition(config.instance_root, partition.partition_id).root
        except safety.UnsafeValueError as exc:
            log.error("Skipping a partition: %s", exc)
            unusable[repr(partition.partition_id)] = str(exc)
            continue
        if path.is_dir():
            busy[partition.partition_id] = path
        else:
            log.info("%s: no directory on this node, nothing to report", partition.partition_id)
    observed = {partition_id: PartitionObservation(exists=True) for partition_id in busy}
    return ReportPlan(busy, unusable, plan_destruction(computer, observed))
