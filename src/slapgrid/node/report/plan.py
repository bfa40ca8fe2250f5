"""What `slapgrid report` will do, as `--dry-run`, `slapgrid plan` and the run itself see it.

One function, so the plan a user is shown is the plan the run follows. Only a partition
`slapgrid format` made is measured or wiped: the master names a directory, and `etc`, `var`
or `.slapgrid` under the instance root hold the agent's own files, not an instance's.
"""

from __future__ import annotations

import json
import logging
import pwd
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from slapgrid.node import layout, safety
from slapgrid.node.config import NodeConfig
from slapgrid.node.files import read_text
from slapgrid.node.instance.partition import check_partition
from slapgrid.node.planner import Action, Cause, Kind, PartitionObservation, plan_destruction
from slapgrid.slap.documents import DESTROYED, Computer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportPlan:
    busy: dict[str, Path]  # partitions holding an instance and present on disk, by id
    unusable: dict[str, str]  # partitions not destroyed that cannot be measured: why
    actions: list[Action]  # destructions, or their refusal, each with its reason


def plan_report(config: NodeConfig, computer: Computer) -> ReportPlan:
    """Partitions to report usage for and to destroy; looks at the disk, changes nothing."""
    busy: dict[str, Path] = {}
    problems: dict[str, str | None] = {}  # every directory named by the master: why not ours
    for partition in computer.partitions:
        if partition.is_free:
            continue
        pid = partition.partition_id
        try:
            path = layout.partition(config.instance_root, pid).root
        except safety.UnsafeValueError as exc:
            problems[pid] = str(exc)
            continue
        if not path.is_dir():
            log.info("%s: no directory on this node, nothing to report", pid)
            continue
        problems[pid] = partition_problem(path)
        if problems[pid] is None:
            busy[pid] = path
    unusable = {
        repr(p.partition_id): problem
        for p in computer.partitions
        if (problem := problems.get(p.partition_id)) and p.requested_state != DESTROYED
    }
    for pid, problem in unusable.items():
        log.error("Skipping partition %s: %s", pid, problem)
    return ReportPlan(busy, unusable, destruction_actions(computer, problems))


def destruction_actions(computer: Computer, problems: Mapping[str, str | None]) -> list[Action]:
    """Wipe each destroyed partition found, or refuse it when it is not a partition.

    `problems` holds, for every id the master names and this node has a directory for, why
    that directory is not a partition (None when it is). Pure: the refusal `slapgrid plan`
    shows is the one the run reports to the master.
    """
    observed = {pid: PartitionObservation(exists=True, problem=p) for pid, p in problems.items()}
    return [
        Action(
            Kind.ERROR,
            action.target,
            Cause.NOT_A_PARTITION,
            f"refusing to destroy: {problem}",
            DESTROYED,
            0,
        )
        if (problem := problems[action.target])
        else action
        for action in plan_destruction(computer, observed)
    ]


def partition_problem(path: Path) -> str | None:
    """Why `path` is not a partition `slapgrid format` made, or None.

    It must hold format's marker, and pass deploy's checks (a plain directory, mode 0750)
    with the owner the marker names.
    """
    try:
        marker = read_text(path / layout.RESOURCE_FILE)
    except OSError as exc:
        return f"cannot read {path / layout.RESOURCE_FILE}: {exc.strerror}"
    if marker is None:
        return f"{path} is not a partition: no {layout.RESOURCE_FILE} (made by `slapgrid format`)"
    try:
        owner = _uid(json.loads(marker)["user"]["name"])
    except (ValueError, TypeError, KeyError) as exc:
        return f"{path / layout.RESOURCE_FILE} names no known owner ({exc}): run `slapgrid format`"
    return "; ".join(check_partition(path, owner)) or None


def _uid(name: str) -> int:
    """The user format named; format names an uid without a passwd entry by its number."""
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        if name.isdigit():
            return int(name)
        raise
