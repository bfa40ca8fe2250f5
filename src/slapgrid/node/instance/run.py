"""`slapgrid instance`: bring every partition to the state the master requests.

Plan first (pure, with reasons), then carry the work out in parallel, bounded by `jobs`
and by an optional time budget. One partition failing never stops the others. When the
master cannot be reached, keep what runs running and start what supervisord knows (exit 3).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from slapgrid.errors import ConfigError, SlapgridError
from slapgrid.exit_status import ExitStatus
from slapgrid.node import layout, lock
from slapgrid.node.buildout import BuildoutError
from slapgrid.node.config import NodeConfig
from slapgrid.node.files import atomic_write
from slapgrid.node.instance.deploy import deploy, start_again
from slapgrid.node.instance.deployment import Deployment, PromiseFailure
from slapgrid.node.instance.health import ServiceStarts, count_check
from slapgrid.node.instance.outcome import InstanceOutcome, instance_names
from slapgrid.node.instance.partition import observe_partition
from slapgrid.node.instance.steps.promises import check_up_to_date
from slapgrid.node.planner import Action, BackoffPolicy, Cause, Kind, plan_instances
from slapgrid.node.process_states import ProcessState
from slapgrid.node.run_result import RunResult
from slapgrid.node.state import StateStore
from slapgrid.node.supervisor.control import Supervisor
from slapgrid.node.supervisor.errors import SupervisorError
from slapgrid.slap.client import SlapClient
from slapgrid.slap.documents import Computer, ComputerPartition
from slapgrid.slap.errors import ConnectionError, HTTPStatusError, NotFoundError, SlapError

log = logging.getLogger(__name__)

WAKE_CALLS = 16
"""startProcessGroup calls in flight at once when services come back after a reboot."""


def supervisor_for(config: NodeConfig) -> Supervisor:
    """The node's supervisord, configured; running if a partition has programs for it (the
    first deployment to reach the supervise step launches it otherwise)."""
    supervisor = Supervisor(
        config.instance_root, may_launch=not config.forbid_supervisord_automatic_launch
    )
    supervisor.ensure_config(
        config.master_url, config.computer_id, config.certificate_repository_path
    )
    supervisor.ensure_running_if_needed()
    return supervisor


def fetch_computer(client: SlapClient) -> Computer:
    try:
        return client.computer()
    except NotFoundError as exc:
        raise SlapError(f"the master does not know computer {client.computer_id}: {exc}") from None


def read_processes(supervisor: Supervisor) -> dict[str, tuple[ProcessState, ...]] | None:
    """Every partition's program states, or None (then nothing is started for being down)
    when supervisord does not answer: it was not launched, or launching is forbidden."""
    try:
        return supervisor.process_states()
    except SupervisorError as exc:
        log.debug("process states not read: %s", exc)
        return None


def plan_partitions(
    config: NodeConfig,
    computer: Computer,
    store: StateStore,
    *,
    force: bool,
    only: frozenset[str],
    supervisor: Supervisor | None = None,
    processes: dict[str, tuple[ProcessState, ...]] | None = None,
) -> list[Action]:
    """The run's actions. `processes`: the program states the run already read; otherwise
    `supervisor` is read (never launched) for them."""
    unknown = only - {p.partition_id for p in computer.partitions}
    if unknown:
        listed = ", ".join(sorted(unknown))  # a typo, as --only-sr's: a usage mistake
        raise ConfigError(f"option --only-cp: the master lists no partition {listed} here")
    if processes is None:
        processes = read_processes(supervisor or Supervisor(config.instance_root))
    if processes is None and supervisor is None and not config.forbid_supervisord_automatic_launch:
        processes = {}  # a dry run: the real run would launch supervisord, running nothing yet
    checks = store.failed_checks()
    observed = {
        p.partition_id: replace(
            observe_partition(config, p, processes), failed_checks=checks.get(p.partition_id)
        )
        for p in computer.partitions
    }
    return plan_instances(
        computer,
        observed,
        store.failures(),
        time.time(),
        maximum_periodicity=config.maximum_periodicity,
        force=force,
        only=only,
        policy=BackoffPolicy(),
        redeploy_after=config.promise_failures_before_redeploy,
    )


class InstanceRun:
    def __init__(
        self,
        config: NodeConfig,
        client: SlapClient,
        supervisor: Supervisor,
        *,
        cancel: threading.Event | None = None,
        processes: dict[str, tuple[ProcessState, ...]] | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.supervisor = supervisor
        self.cancel = cancel or threading.Event()
        self.store = StateStore(config.instance_root)
        self.outcome = InstanceOutcome()
        self._lock = threading.Lock()
        self.service_starts = ServiceStarts(supervisor, processes)

    def _report_error(self, pid: str, message: str) -> None:
        try:
            self.client.instance_error(pid, message)
        except SlapError as exc:
            log.warning("could not report the error of %s: %s", pid, exc)

    def _record(self, bucket: list[tuple[str, str]], pid: str, message: str) -> None:
        with self._lock:
            bucket.append((pid, message))

    def deploy(self, partition: ComputerPartition, action: Action) -> None:
        """Deploy; or, for an up-to-date partition whose services are down, start them."""
        pid = partition.partition_id
        again = action.kind == Kind.START
        log.info(
            "%s %s (%s): %s",
            "starting" if again else "deploying",
            pid,
            action.state,
            action.reason,
            extra={"partition": pid, "action": action.kind.value, "reason": action.reason},
        )
        job = Deployment(self.config, self.client, self.supervisor, partition, self.cancel)
        started = time.monotonic()
        try:
            (start_again if again else deploy)(job)
        except PromiseFailure as exc:
            self._fail(partition, str(exc), self.outcome.promise_failed)
        except BuildoutError as exc:
            why = f"{exc.cause or exc} (see {job.paths.log})"
            self._fail(partition, exc.report, self.outcome.failed, why)
        except (SlapgridError, OSError) as exc:
            self._fail(partition, str(exc), self.outcome.failed)
        else:
            self.store.clear_failure(pid)
            self.store.clear_failed_checks(pid)
            with self._lock:
                self.outcome.done.append(pid)
            log.info(
                "%s %s in %.1f s",
                pid,
                action.state,
                time.monotonic() - started,
                extra={"partition": pid, "action": "started" if again else "deployed"},
            )

    def _fail(
        self,
        partition: ComputerPartition,
        message: str,
        bucket: list[tuple[str, str]],
        summary: str | None = None,
    ) -> None:
        """Log one line (`summary`, else the message's first), remember, tell the master."""
        pid = partition.partition_id
        if self.cancel.is_set():  # stopped on purpose: not a failure to remember or report
            log.info("%s: interrupted, left for the next run", pid, extra={"partition": pid})
            with self._lock:
                self.outcome.postponed.append(pid)
            return
        log.error(
            "%s failed: %s",
            pid,
            summary or (message.splitlines()[0] if message else ""),
            extra={"partition": pid, "action": "failed"},
        )
        self._record(bucket, pid, message)
        failure = self.store.record_failure(pid, message, partition.timestamp)
        with contextlib.suppress(OSError):
            atomic_write(layout.partition(self.config.instance_root, pid).error_log, message, 0o640)
        self._report_error(pid, message)
        log.info(
            "%s will be retried after back-off (attempt %d)",
            pid,
            failure.attempts,
            extra={"partition": pid},
        )

    def stop(self, partition: ComputerPartition, action: Action) -> None:
        pid = partition.partition_id
        try:
            self.supervisor.stop_partition(pid)
            with contextlib.suppress(SlapError):
                self.client.stopped(pid)
            with self._lock:
                self.outcome.done.append(pid)
            log.info(
                "%s stopped: %s",
                pid,
                action.reason,
                extra={"partition": pid, "action": "stopped", "reason": action.reason},
            )
        except SlapgridError as exc:
            self._fail(partition, str(exc), self.outcome.failed)

    def check(self, partition: ComputerPartition) -> None:
        """An up-to-date started partition: run due promises, tell the master what it must
        know. A failing promise is a promise failure of the run (exit 2) and one more failed
        check towards the redeployment that heals the partition."""
        pid = partition.partition_id
        job = Deployment(self.config, self.client, self.supervisor, partition, self.cancel)
        report = check_up_to_date(job, self.service_starts.since(pid))
        now = time.time()
        with self._lock:
            if self.cancel.is_set():  # promises cut short: nothing was checked
                self.outcome.postponed.append(pid)
                return
            self.outcome.up_to_date.append(pid)
            self.outcome.promises[pid] = [
                {"title": r.title, "failed": r.failed, "cached": r.reused, "age": r.age(now)}
                for r in report.results
            ]
        if report.failed:
            self._record(self.outcome.promise_failed, pid, report.error_message or "")
        count_check(self.store, pid, report, self.config.promise_failures_before_redeploy)

    def error(self, partition: ComputerPartition, action: Action) -> None:
        pid = partition.partition_id
        log.error("%s: %s", pid, action.reason, extra={"partition": pid, "action": "error"})
        self._report_error(pid, action.reason)
        if action.cause != Cause.NO_DIRECTORY:  # the reference tolerates a missing directory
            self._record(self.outcome.failed, pid, action.reason)

    def clean_free(self, partition: ComputerPartition) -> None:
        paths = layout.partition(self.config.instance_root, partition.partition_id)
        with contextlib.suppress(FileNotFoundError):
            paths.timestamp.unlink()
        log.info("%s is free: removed agent left-overs", partition.partition_id)

    def wake(self, pids: list[str]) -> None:
        """Ask supervisord to start every down partition at once (no waiting): after a
        reboot all services come up together, not one pool slot after the other, while the
        START handlers check their promises (and re-add lost groups). supervisord answers
        each call on a turn of its loop, so the calls go in parallel."""

        def start(pid: str) -> None:
            try:
                self.supervisor.start_partition(pid)
            except SupervisorError as exc:  # its handler tries again, and reports
                log.debug("%s not started at once: %s", pid, exc, extra={"partition": pid})

        with ThreadPoolExecutor(max_workers=WAKE_CALLS) as pool:
            list(pool.map(start, pids))

    def execute(
        self, actions: list[Action], computer: Computer, time_budget: float | None = None
    ) -> InstanceOutcome:
        partitions = {p.partition_id: p for p in computer.partitions}
        handlers: dict[Kind, Callable[[ComputerPartition, Action], None]] = {
            Kind.DEPLOY: self.deploy,
            Kind.START: self.deploy,
            Kind.STOP: self.stop,
            Kind.CHECK: lambda p, a: self.check(p),
            Kind.ERROR: self.error,
            Kind.CLEAN_FREE: lambda p, a: self.clean_free(p),
        }
        deadline = None if time_budget is None else time.monotonic() + time_budget

        def run(action: Action) -> None:
            if self.cancel.is_set() or (deadline is not None and time.monotonic() > deadline):
                with self._lock:
                    self.outcome.postponed.append(action.target)
                return
            handlers[action.kind](partitions[action.target], action)

        for action in actions:
            if action.kind in (Kind.SKIP, Kind.WAIT):
                self.outcome.skipped.append((action.target, action.reason))
                log.debug(
                    "%s skipped: %s",
                    action.target,
                    action.reason,
                    extra={"partition": action.target, "action": action.kind.value},
                )
        work = [a for a in actions if a.kind in handlers]
        self.wake([a.target for a in work if a.kind == Kind.START])
        with ThreadPoolExecutor(max_workers=self.config.parallel_jobs) as pool:
            for future in [pool.submit(run, action) for action in work]:
                future.result()
        return self.outcome


def summarise(outcome: InstanceOutcome) -> None:
    log.info(
        "instance run: %d done, %d up to date, %d skipped, %d failed, %d promise failures, "
        "%d postponed in %.1f s",
        len(outcome.done),
        len(outcome.up_to_date),
        len(outcome.skipped),
        len(outcome.failed),
        len(outcome.promise_failed),
        len(outcome.postponed),
        time.time() - outcome.started_at,
    )
    for pid, message in outcome.failed + outcome.promise_failed:
        tail = message.strip().splitlines()[-1] if message.strip() else ""
        log.info("  %s: %s (log: %s)", pid, tail, ".slapgrid/log/instance.log")
    if outcome.postponed:
        log.info("  left for the next run (time budget spent): %s", ", ".join(outcome.postponed))


def go_offline(config: NodeConfig, reason: Exception) -> RunResult:
    """The master is unreachable: keep services up, start what supervisord knows."""
    log.warning("master unreachable (%s): starting known services offline", reason)
    failures = StateStore(config.instance_root).failures()  # untouched: still backing off
    try:
        supervisor = supervisor_for(config)
        if supervisor.has_partitions() or supervisor.is_running():
            supervisor.start_all()
    except SlapgridError as exc:
        log.error("offline start failed: %s", exc)
        return RunResult(ExitStatus.FAILED, failures=failures)
    return RunResult(ExitStatus.OFFLINE, failures=failures)


def run_instance(
    config: NodeConfig,
    client: SlapClient,
    *,
    force: bool = False,
    only: Iterable[str] = (),
    time_budget: float | None = None,
    cancel: threading.Event | None = None,
) -> RunResult:
    """One `slapgrid instance` run: OK, FAILED, PROMISE_FAILED or OFFLINE."""
    with lock.hold(layout.partitions_lock(config.instance_root), "instance/report"):
        try:
            computer = fetch_computer(client)
        except (ConnectionError, HTTPStatusError) as exc:
            return go_offline(config, exc)
        supervisor = supervisor_for(config)
        processes = read_processes(supervisor)  # once: the plan and the checks share it
        runner = InstanceRun(config, client, supervisor, cancel=cancel, processes=processes)
        actions = plan_partitions(
            config,
            computer,
            runner.store,
            force=force,
            only=frozenset(only),
            supervisor=supervisor,
            processes=processes,
        )
        outcome = runner.execute(actions, computer, time_budget)
        summarise(outcome)
        record = outcome.as_dict(actions, instance_names(computer))
        runner.store.record_run("instance", record)
        return RunResult(outcome.status, outcome.counts(), failures=runner.store.failures())
