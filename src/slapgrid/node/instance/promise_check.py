"""`slapgrid promise`: the promises of the started partitions, and nothing else.

As the reference's `slapos node promise`, only the partitions the master wants started
are checked, and every promise runs now in test mode (the reference's `force`, no
`check_anomaly`): an operator asks for the verdict now, and anomaly mode would wait for a
few failures in a row before calling one. The master then hears what the agent's
periodic check tells it (`steps.promises.tell_master`): the error with the first
failure's message, or started when the partition recovers; never a bang, which would
have every partition redeployed for a look. Nothing is deployed or started, and a failure
is not counted towards the agent's healing redeployment: an operator looking must not
change what the agent decides.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from slapgrid.errors import ConfigError
from slapgrid.exit_status import ExitStatus
from slapgrid.node import layout, lock
from slapgrid.node.config import NodeConfig
from slapgrid.node.instance.deployment import Deployment
from slapgrid.node.instance.run import fetch_computer
from slapgrid.node.instance.steps.promises import check_promises, tell_master
from slapgrid.node.promises.results import TEST, PromiseReport
from slapgrid.node.promises.run import log_report
from slapgrid.node.supervisor.control import Supervisor
from slapgrid.slap.client import SlapClient
from slapgrid.slap.documents import STARTED, Computer, ComputerPartition


@dataclass
class PromiseCheck:
    """Each checked partition's report, and the partitions left out with why."""

    reports: dict[str, PromiseReport] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def status(self) -> ExitStatus:
        failed = any(report.failed for report in self.reports.values())
        return ExitStatus.PROMISE_FAILED if failed else ExitStatus.OK


def select(
    computer: Computer, only: Iterable[str], deployed: Iterable[str]
) -> tuple[list[ComputerPartition], list[tuple[str, str]]]:
    """PURE: the partitions to check, and the others named (or busy) with why they are not.

    A name the master does not list here is a usage mistake, as `--only-cp`'s.
    """
    wanted = set(only)
    listed = {partition.partition_id for partition in computer.partitions}
    if unknown := sorted(wanted - listed):
        raise ConfigError(f"the master lists no partition {', '.join(unknown)} here")
    done = set(deployed)
    chosen, skipped = [], []
    for partition in computer.partitions:
        pid = partition.partition_id
        if (pid not in wanted) if wanted else partition.is_free:
            continue
        if partition.requested_state != STARTED:
            skipped.append((pid, f"requested {partition.requested_state}: no promise to keep"))
        elif pid not in done:
            skipped.append((pid, "not deployed yet: `slapgrid instance` checks it after"))
        else:
            chosen.append(partition)
    return chosen, skipped


def run_promise_check(
    config: NodeConfig, client: SlapClient, only: Iterable[str] = ()
) -> PromiseCheck:
    """Check the promises of the started deployed partitions (`only` those, if given).

    Holds the partitions' lock: a deployment must not change a partition under its checks.
    """
    with lock.hold(layout.partitions_lock(config.instance_root), "instance/report"):
        computer = fetch_computer(client)
        deployed = [
            p.partition_id
            for p in computer.partitions
            if layout.partition(config.instance_root, p.partition_id).timestamp.exists()
        ]
        chosen, skipped = select(computer, only, deployed)
        supervisor = Supervisor(config.instance_root, may_launch=False)  # only read
        now = time.time()  # every result from before now is stale: each promise runs

        def check(partition: ComputerPartition) -> PromiseReport:
            job = Deployment(config, client, supervisor, partition)
            report = check_promises(job, TEST, fresh_after=now)
            log_report(report, job.pid)
            tell_master(job, report, bang=False)
            return report

        workers = max(1, min(config.parallel_jobs, len(chosen)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="promise") as pool:
            reports = list(pool.map(check, chosen))
    return PromiseCheck(
        {p.partition_id: report for p, report in zip(chosen, reports, strict=True)}, skipped
    )
