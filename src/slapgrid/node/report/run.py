"""`slapgrid report`: send this node's usage, then wipe the partitions the master destroyed.

Order, as the reference: the instances' report scripts (`scripts`), one usage journal
(`send`: `measure` and `usage_files`), then destruction (`destroy`, `wipe`), following the
plan `plan_report` shows. A partition is destroyed only once the usage documents in its
directory were accepted: a failed send keeps them, and the partition, for the next run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slapgrid.errors import SlapgridError
from slapgrid.exit_status import ExitStatus
from slapgrid.node import layout
from slapgrid.node.config import NodeConfig
from slapgrid.node.lock import hold
from slapgrid.node.planner import Kind
from slapgrid.node.report.destroy import DESTROY_TIMEOUT, destroy_partition
from slapgrid.node.report.environment import Environment
from slapgrid.node.report.plan import plan_report
from slapgrid.node.report.scripts import SCRIPT_TIMEOUT, run_report_scripts
from slapgrid.node.report.send import send_usage
from slapgrid.node.run_result import RunResult
from slapgrid.node.state import StateStore
from slapgrid.node.supervisor.control import Supervisor
from slapgrid.slap.client import SlapClient
from slapgrid.slap.errors import SlapError

log = logging.getLogger(__name__)


class ReportError(SlapgridError):
    """The report run could not start, e.g. the master is unreachable."""

    def __init__(self, message: str, exit_code: ExitStatus = ExitStatus.FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # OFFLINE when the master is unreachable


@dataclass
class ReportSummary:
    """The outcome of one run, as `slapgrid status` and the console show it."""

    usage: str = "nothing"  # "sent", "failed" or "nothing"
    movements: int = 0
    destroyed: list[str] = field(default_factory=list)
    postponed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def status(self) -> ExitStatus:
        return ExitStatus.FAILED if self.failed or self.usage == "failed" else ExitStatus.OK

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": time.time(),
            "usage": self.usage,
            "movements": self.movements,
            "destroyed": self.destroyed,
            "postponed": self.postponed,
            "failed": self.failed,
            "exit_code": self.status,
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
    env: Environment | None = None,
) -> RunResult:
    """Report usage and destroy what the master destroyed; FAILED if anything failed.

    Holds the partitions lock shared with `slapgrid instance`. An unreachable master is a
    `ReportError` (nothing can be done without the computer document).
    """
    supervisor = supervisor or Supervisor(config.instance_root)
    env = env or Environment.current()
    with hold(layout.partitions_lock(config.instance_root), "instance/report"):
        try:
            computer = client.computer()
        except SlapError as exc:
            raise ReportError(
                f"cannot get the partitions of {config.computer_id} from the master: {exc}",
                exc.exit_code,
            ) from None
        plan = plan_report(config, computer)
        summary = ReportSummary(failed=dict(plan.unusable))
        for partition_id, path in plan.busy.items():
            failures = run_report_scripts(path, script_timeout)
            if failures:
                summary.failed[partition_id] = failures[0]
                _tell_error(client, partition_id, "\n".join(failures))
        delivery = send_usage(config, client, supervisor, plan.busy, env)
        summary.usage, summary.movements = delivery.status, delivery.movements
        for action in plan.actions:
            if action.kind == Kind.ERROR:
                log.error("%s: %s", action.target, action.reason)
                summary.failed[action.target] = action.reason
                _tell_error(client, action.target, action.reason)
                continue
            if action.target in delivery.unsent:
                log.warning(
                    "%s: destruction postponed: its usage documents were not accepted",
                    action.target,
                )
                summary.postponed.append(action.target)
                continue
            _destroy(
                config,
                client,
                supervisor,
                action.target,
                plan.busy[action.target],
                summary,
                destroy_timeout,
                env,
            )
        StateStore(config.instance_root).record_run("report", summary.as_dict())
    log.info(summary.line())
    counts = {"destroyed": len(summary.destroyed), "postponed": len(summary.postponed)}
    return RunResult(summary.status, {**counts, "failed": len(summary.failed)})


def _tell_error(client: SlapClient, partition_id: str, message: str) -> None:
    try:
        client.instance_error(partition_id, message)
    except SlapError as exc:
        log.warning("%s: could not report the error to the master: %s", partition_id, exc)


def _destroy(
    config: NodeConfig,
    client: SlapClient,
    supervisor: Supervisor,
    partition_id: str,
    path: Path,
    summary: ReportSummary,
    timeout: float,
    env: Environment,
) -> None:
    """Destroy one partition; its failure is reported and never stops the others."""
    try:
        done = destroy_partition(
            config, client, supervisor, partition_id, path, env=env, timeout=timeout
        )
    except SlapgridError as exc:
        log.error("%s: destruction failed: %s", partition_id, str(exc).splitlines()[0])
        summary.failed[partition_id] = str(exc)
        _tell_error(client, partition_id, f"Destruction failed: {exc}")
        return
    (summary.destroyed if done else summary.postponed).append(partition_id)
