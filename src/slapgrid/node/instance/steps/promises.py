"""Step 5, and the periodic check: how a promise result reaches the master.

After a deployment (test mode) a failing promise fails the deployment (`PromiseFailure`:
the caller tells the master the error, and the partition is not reported started). An
up-to-date partition's due promises (anomaly mode) tell the master what it must know:
a bang when a failing promise allows it, an error whenever a failing promise ran (with its
message), started when it recovers.
"""

from __future__ import annotations

import logging
import time

from slapgrid.node.instance.deployment import Deployment, PromiseFailure
from slapgrid.node.promises.results import ANOMALY, TEST, PromiseReport
from slapgrid.node.promises.run import log_report, run_promises
from slapgrid.slap.errors import SlapError

log = logging.getLogger(__name__)

START_GRACE = 10.0
"""Seconds services just (re)started get to make their failing promises pass."""


def check_promises(
    job: Deployment, mode: str = TEST, fresh_after: float | None = None
) -> PromiseReport:
    key_file, cert_file = job.certificate_files()
    return run_promises(
        job.paths.root,
        mode=mode,
        timeout=job.config.promise_timeout,
        fresh_after=fresh_after,
        software=job.software,
        config={
            "partition-id": job.pid,
            "computer-id": job.partition.computer_id,
            "master-url": job.config.master_url,
            "partition-key": str(key_file or ""),
            "partition-cert": str(cert_file or ""),
        },
        cancel=job.cancel,
    )


def promises_after_start(job: Deployment) -> PromiseReport:
    """Services just (re)started need a moment to listen: a failing promise is retried
    for up to START_GRACE seconds before the deployment counts as a promise failure."""
    deadline = time.monotonic() + START_GRACE
    waiting, pause = False, 0.05  # most services listen within a few tenths of a second
    while True:
        report = check_promises(job)
        if not report.failed or time.monotonic() > deadline or job.cancel.is_set():
            log_report(report, job.pid)
            return report
        if not waiting:
            waiting = True
            log.info(
                "%s: waiting up to %g s for %s to pass",
                job.pid,
                START_GRACE,
                ", ".join(result.title for result in report.failures),
                extra={"partition": job.pid},
            )
        time.sleep(pause)
        pause = min(pause * 1.5, 0.5)


def keep_promises(job: Deployment) -> None:
    """The deployment step: raises PromiseFailure, with the first failure, when one fails."""
    report = promises_after_start(job)
    if job.cancel.is_set():  # cut short: the deployment must not be marked done
        raise PromiseFailure("promises stopped: the agent was asked to stop")
    if report.failed:
        raise PromiseFailure(report.error_message or "a promise failed")


def check_up_to_date(job: Deployment, services_since: float) -> PromiseReport:
    """An up-to-date started partition: run due promises, tell the master what changed.

    `services_since`: when its services last (re)started (`math.inf` if one is down). A
    result from before that, or from the deployment, is not reused: a cached success must
    not hide a service that died since.
    """
    pid = job.pid
    try:
        deployed_at = job.paths.timestamp.stat().st_mtime
    except FileNotFoundError:
        deployed_at = 0.0
    result = check_promises(job, ANOMALY, max(services_since, deployed_at))
    if job.cancel.is_set():  # promises cut short: nothing to tell the master
        return result
    log_report(result, pid)
    tell_master(job, result, bang=True)
    return result


def tell_master(job: Deployment, result: PromiseReport, *, bang: bool) -> None:
    """The error with the first failure's message, or started when the partition recovers
    (or was never told); a bang first when `bang` and a failing promise asks for one."""
    pid = job.pid
    status = job.partition.access_status
    was_error = status is not None and status.startswith("#error")
    try:
        if bang and result.bang_message:
            job.client.bang(pid, result.bang_message)
        # a failure is never served from cache here: it ran now, the master gets its message
        if result.failed:
            job.client.instance_error(pid, result.error_message or "a promise failed")
        elif not result.failed and (was_error or status is None):
            job.client.started(pid)
    except SlapError as exc:
        log.warning("could not report promises of %s: %s", pid, exc)
