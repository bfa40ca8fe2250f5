"""`slapgrid node` decisions: what runs next and when, driven by a fake clock."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from slapgrid.cli.render import summary_line
from slapgrid.errors import ConfigError
from slapgrid.exit_status import ExitStatus
from slapgrid.node.config import NodeConfig, load_node_config
from slapgrid.node.daemon.changes import (
    Change,
    PartitionView,
    Snapshot,
    compare,
    error_backoff,
)
from slapgrid.node.daemon.metrics import Metrics
from slapgrid.node.daemon.schedule import (
    NEVER,
    Finished,
    Intervals,
    Job,
    Lane,
    Result,
    Schedule,
    Start,
    master_backoff,
    retry_times,
)
from slapgrid.node.daemon.signals import Waker
from slapgrid.node.daemon.status_file import location
from slapgrid.node.planner import Failure
from slapgrid.node.run_result import RunResult
from slapgrid.slap.documents import Computer, ComputerPartition, SoftwareRelease

T0 = 1_000_000.0
INTERVALS = Intervals(instance=60, report=3600, software=600, lock_retry=5)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def jobs(starts: list[Start]) -> list[tuple[Job, frozenset[str]]]:
    return [(start.job, start.only) for start in starts]


def done(
    start: Start,
    result: Result = Result.OK,
    *,
    built: bool = False,
    retry_at: dict[str, float] | None = None,
) -> Finished:
    return Finished(start, result, 1.0, built=built, retry_at=retry_at or {})


def started(clock: Clock) -> tuple[Schedule, Start, Start]:
    """A schedule right after start-up, software and a full instance run in progress."""
    schedule = Schedule.starting(INTERVALS, clock.now)
    software, instance = schedule.take(clock.now)
    return schedule, software, instance


# --- the schedule ---------------------------------------------------------------------------


def test_start_runs_software_and_instance_side_by_side_then_report(clock: Clock) -> None:
    schedule, software, instance = started(clock)
    assert (software.job, instance.job) == (Job.SOFTWARE, Job.INSTANCE)
    assert instance.only == frozenset() and instance.reason == "agent started"
    assert schedule.take(clock.now) == []  # both lanes busy
    schedule.finished(done(instance), clock.advance(2))
    (report,) = schedule.take(clock.now)
    assert report.job == Job.REPORT  # the partitions lane: instance first, then report
    schedule.finished(done(report), clock.advance(1))
    schedule.finished(done(software), clock.advance(1))
    assert schedule.due[Job.INSTANCE] == T0 + 2 + 60
    assert schedule.due[Job.REPORT] == T0 + 3 + 3600
    assert schedule.due[Job.SOFTWARE] == T0 + 4 + 600
    assert schedule.wake_at() == T0 + 62
    assert schedule.take(clock.advance(30)) == []
    (periodic,) = schedule.take(clock.advance(28))
    assert (periodic.job, periodic.reason) == (Job.INSTANCE, "periodic run")


def test_changed_partition_gets_a_targeted_run_at_once(clock: Clock) -> None:
    schedule, software, instance = started(clock)
    schedule.finished(done(instance), clock.advance(1))
    schedule.finished(done(software), clock.now)
    schedule.take(clock.now)  # the report
    schedule.finished(done(schedule.running[Lane.PARTITIONS]), clock.advance(1))
    schedule.changed(Change({"slappart1": "timestamp 1 → 2"}), clock.advance(5))
    assert schedule.wake_at() <= clock.now
    (run,) = schedule.take(clock.now)
    assert (run.job, run.only) == (Job.INSTANCE, frozenset({"slappart1"}))
    assert "slappart1 timestamp 1 → 2" in run.reason
    schedule.finished(done(run), clock.advance(1))
    assert schedule.due[Job.INSTANCE] == T0 + 1 + 60  # a targeted run keeps the period


def test_changes_during_a_run_are_not_lost(clock: Clock) -> None:
    schedule, software, instance = started(clock)
    schedule.changed(Change({"slappart2": "allocated (started)"}), clock.advance(1))
    schedule.changed(Change(software="http://sr (available)"), clock.now)
    assert schedule.take(clock.now) == []  # lanes still busy
    schedule.finished(done(instance), clock.advance(1))
    schedule.finished(done(software), clock.now)
    starts = schedule.take(clock.now)
    assert jobs(starts) == [
        (Job.SOFTWARE, frozenset()),
        (Job.INSTANCE, frozenset({"slappart2"})),
    ]
    assert "software list changed" in starts[0].reason


def test_full_run_absorbs_pending_partitions(clock: Clock) -> None:
    schedule = Schedule.starting(INTERVALS, clock.now)
    schedule.changed(Change({"slappart0": "freed"}), clock.now)
    starts = schedule.take(clock.now)
    assert jobs(starts)[1] == (Job.INSTANCE, frozenset())
    assert schedule.pending == {}


def test_master_errors_back_off_exponentially_and_recovery_converges(clock: Clock) -> None:
    schedule, software, instance = started(clock)
    schedule.finished(done(instance, Result.OFFLINE), clock.advance(1))
    assert schedule.master_retry_at == clock.now + 5
    schedule.finished(done(software, Result.MASTER_ERROR), clock.now)
    assert schedule.master_retry_at == clock.now + 10
    schedule.changed(Change({"slappart1": "allocated (started)"}), clock.now)
    assert schedule.take(clock.advance(9)) == []  # backing off, even with work pending
    assert schedule.wake_at() == T0 + 11
    starts = schedule.take(clock.advance(1))
    assert [s.job for s in starts] == [Job.SOFTWARE, Job.INSTANCE]  # both still due
    for start in starts:
        schedule.finished(done(start, Result.MASTER_ERROR), clock.now)
    assert master_backoff(schedule.master_errors) == 40
    assert schedule.master_back(clock.advance(3)) is True
    assert schedule.master_retry_at == 0 and schedule.master_errors == 0
    assert [s.job for s in schedule.take(clock.now)] == [Job.SOFTWARE, Job.INSTANCE]
    assert schedule.master_back(clock.now) is False  # nothing to recover from


def test_only_a_run_that_reached_the_master_ends_its_back_off(clock: Clock) -> None:
    schedule, software, instance = started(clock)
    schedule.finished(done(software, Result.MASTER_ERROR), clock.now)
    schedule.finished(done(instance, Result.FAILED), clock.now)  # maybe offline: proves nothing
    assert schedule.master_errors == 1 and schedule.take(clock.advance(1)) == []
    retry, report = schedule.take(clock.advance(4))
    assert (retry.job, report.job) == (Job.SOFTWARE, Job.REPORT)
    schedule.finished(done(retry, Result.FAILED), clock.now)  # a build failed: master answered
    assert schedule.master_errors == 0 and schedule.master_retry_at == 0


def test_targeted_run_hit_by_master_error_is_given_back(clock: Clock) -> None:
    schedule, _, instance = started(clock)
    schedule.finished(done(instance), clock.now)
    schedule.take(clock.now)  # the report
    schedule.finished(done(schedule.running[Lane.PARTITIONS]), clock.now)
    schedule.changed(Change({"slappart1": "x"}), clock.now)
    (run,) = schedule.take(clock.now)
    schedule.finished(done(run, Result.MASTER_ERROR), clock.advance(1))
    assert schedule.pending == {"slappart1": "not processed yet"}


def test_locked_lane_waits_without_blocking_the_other(clock: Clock) -> None:
    schedule, _, instance = started(clock)
    schedule.finished(done(instance, Result.LOCKED), clock.advance(1))
    assert schedule.master_errors == 0
    assert schedule.take(clock.advance(4)) == []
    assert schedule.wake_at() == T0 + 6
    (again,) = schedule.take(clock.advance(1))
    assert (again.job, again.reason) == (Job.INSTANCE, "agent started")


def test_failed_partition_is_retried_when_its_back_off_ends(clock: Clock) -> None:
    schedule, software, instance = started(clock)
    schedule.finished(done(software), clock.now)
    back_off_end = clock.now + 20
    stale = clock.now - 100  # a back-off that ended long ago never causes a run by itself
    schedule.finished(
        done(instance, Result.FAILED, retry_at={"slappart3": back_off_end, "slappart4": stale}),
        clock.advance(1),
    )
    schedule.take(clock.now)  # the report
    schedule.finished(done(schedule.running[Lane.PARTITIONS]), clock.now)
    assert schedule.retries == {"slappart3": back_off_end}
    assert schedule.wake_at() == back_off_end
    assert schedule.take(clock.advance(10)) == []
    (retry,) = schedule.take(clock.advance(10))
    assert retry.only == frozenset({"slappart3"}) and "back-off ended" in retry.reason
    schedule.finished(done(retry), clock.advance(1))
    assert schedule.retries == {}
    assert schedule.wake_at() == T0 + 1 + 60


def test_software_back_off_and_build_completion(clock: Clock) -> None:
    schedule, software, instance = started(clock)
    schedule.finished(done(instance), clock.now)
    schedule.finished(
        done(software, Result.FAILED, retry_at={"http://sr": clock.now + 10}), clock.now
    )
    assert schedule.due[Job.SOFTWARE] == T0 + 10
    assert "back-off of http://sr ended" in schedule.why[Job.SOFTWARE]
    starts = schedule.take(clock.advance(10))
    rebuild = next(s for s in starts if s.job == Job.SOFTWARE)
    schedule.finished(done(next(s for s in starts if s.job != Job.SOFTWARE)), clock.now)
    schedule.finished(done(rebuild, built=True), clock.advance(8))
    (deploy,) = schedule.take(clock.now)
    assert (deploy.job, deploy.reason) == (Job.INSTANCE, "software was built")


def test_software_interval_zero_runs_only_on_change(clock: Clock) -> None:
    schedule = Schedule.starting(Intervals(software=0), clock.now)
    software = schedule.take(clock.now)[0]
    schedule.finished(done(software), clock.now)
    assert schedule.due[Job.SOFTWARE] == NEVER
    schedule.changed(Change(software="http://new (available)"), clock.advance(100))
    assert schedule.due[Job.SOFTWARE] == clock.now


def test_destroy_request_runs_instance_then_report(clock: Clock) -> None:
    schedule, software, instance = started(clock)
    schedule.finished(done(software), clock.now)
    schedule.finished(done(instance), clock.now)
    schedule.take(clock.now)  # the first report
    schedule.finished(done(schedule.running[Lane.PARTITIONS]), clock.advance(1))
    change = Change({"slappart1": "requested started → destroyed"}, destroyed=("slappart1",))
    schedule.changed(change, clock.advance(10))
    (stop,) = schedule.take(clock.now)
    assert stop.only == frozenset({"slappart1"})
    schedule.finished(done(stop), clock.advance(1))
    (report,) = schedule.take(clock.now)
    assert report.job == Job.REPORT and "slappart1 requested destroyed" in report.reason


def test_shorter_periods_apply_at_once(clock: Clock) -> None:
    schedule, software, instance = started(clock)
    schedule.finished(done(instance), clock.now)
    schedule.finished(done(software), clock.now)
    schedule.reconfigure(Intervals(instance=10, report=7200, software=0), clock.advance(1))
    assert schedule.due[Job.INSTANCE] == clock.now + 10
    assert schedule.due[Job.REPORT] == T0  # still due from the start: not pushed back
    assert schedule.due[Job.SOFTWARE] == T0 + 600  # 0: no periodic run, the old one stays


def test_nothing_due_means_sleep_until_the_next_period(clock: Clock) -> None:
    schedule = Schedule(INTERVALS, dict.fromkeys(Job, NEVER), dict.fromkeys(Job, ""))
    assert math.isinf(schedule.wake_at())
    schedule.running[Lane.SOFTWARE] = Start(Job.SOFTWARE, "x")
    schedule.running[Lane.PARTITIONS] = Start(Job.INSTANCE, "x")
    assert math.isinf(schedule.wake_at())


def test_backoffs_and_results() -> None:
    assert [master_backoff(n) for n in (1, 2, 3, 4, 10)] == [5, 10, 20, 40, 300]
    assert [error_backoff(n) for n in (1, 2, 6, 9)] == [1, 2, 30, 30]
    failures = {"a": Failure(at=T0, attempts=3, message="boom")}
    assert retry_times(failures) == {"a": T0 + 40 + 0.5}  # the planner's 10 s · 2^(n-1)
    statuses = (ExitStatus.OK, ExitStatus.FAILED, ExitStatus.PROMISE_FAILED, ExitStatus.OFFLINE)
    assert [Result.of(RunResult(status)) for status in statuses] == [
        Result.OK,
        Result.FAILED,
        Result.PROMISE_FAILED,
        Result.OFFLINE,
    ]


# --- what changed at the master --------------------------------------------------------------


def computer(*partitions: ComputerPartition, software: tuple[str, ...] = ()) -> Computer:
    return Computer(
        "COMP-1",
        list(partitions),
        [SoftwareRelease(url, requested_state="available") for url in software],
    )


def part(pid: str, state: str = "started", timestamp: str | None = "1") -> ComputerPartition:
    return ComputerPartition(
        "COMP-1",
        pid,
        requested_state=state,
        software_release=SoftwareRelease("http://sr"),
        parameters={"timestamp": timestamp} if timestamp else {},
    )


def test_snapshot_keeps_what_the_agent_acts_on() -> None:
    snapshot = Snapshot.of(computer(part("slappart0"), software=("http://sr",)))
    view = snapshot.partitions["slappart0"]
    assert isinstance(view, PartitionView)
    assert (view.state, view.software) == ("started", "http://sr")
    assert snapshot.software == frozenset({("http://sr", "available")})


def test_compare_reports_only_what_needs_work() -> None:
    base = Snapshot(
        {
            "p0": PartitionView("1", "started", "u", False),
            "p1": PartitionView("1", "started", "u", False),
            "p2": PartitionView(None, "destroyed", None, True),
            "p3": PartitionView("1", "started", "u", False),
            "p4": PartitionView(None, "destroyed", None, True),
        },
        frozenset({("u", "available")}),
    )
    assert compare(None, base) == Change()  # the first snapshot is the baseline
    assert compare(base, base).empty  # e.g. the agent's own reports moved the generation
    new = Snapshot(
        {
            "p0": PartitionView("2", "started", "u", False),
            "p1": PartitionView("1", "destroyed", "u", False),
            "p2": PartitionView("1", "started", "v", False),
            "p3": PartitionView(None, "destroyed", None, True),
            "p4": PartitionView(None, "destroyed", None, True),
        },
        frozenset({("u", "destroyed"), ("v", "available")}),
    )
    change = compare(base, new)
    assert change.partitions == {
        "p0": "timestamp 1 → 2",
        "p1": "requested started → destroyed",
        "p2": "allocated (started)",
        "p3": "freed",
    }
    assert change.destroyed == ("p1",)
    assert change.software == "u (destroyed), v (available)"
    gone = compare(new, Snapshot(new.partitions, frozenset({("v", "available")})))
    assert gone.software == "u (no longer listed)" and not gone.partitions
    assert new.partition_states() == {"started": 2, "destroyed": 1, "free": 2}


# --- configuration, status, plumbing --------------------------------------------------------


def config(tmp_path: Path, **options: str) -> NodeConfig:
    required = {
        "master_url": "http://127.0.0.1:1/",
        "computer_id": "COMP-1",
        "instance_root": str(tmp_path),
        "software_root": str(tmp_path),
    }
    return load_node_config(None, {**required, **options}, check_paths=False)


def test_daemon_options_are_checked_when_the_configuration_loads(tmp_path: Path) -> None:
    assert Intervals.of(config(tmp_path)) == Intervals()
    parsed = Intervals.of(
        config(tmp_path, instance_interval="5", report_interval="120", software_interval="0")
    )
    assert (parsed.instance, parsed.report, parsed.software) == (5, 120, 0)
    for option, value in (("instance_interval", "0"), ("poll_interval", "-1")):
        with pytest.raises(ConfigError, match=option):
            config(tmp_path, **{option: value})
    with pytest.raises(ConfigError, match="report_interval"):
        config(tmp_path, report_interval="hourly")
    assert location(config(tmp_path)) == tmp_path / ".slapgrid" / "daemon.json"
    assert location(config(tmp_path, status_file="/run/s.json")) == Path("/run/s.json")
    assert config(tmp_path).metrics_port is None
    assert config(tmp_path, metrics_port="9101").metrics_port == 9101
    with pytest.raises(ConfigError, match="metrics_port"):
        config(tmp_path, metrics_port="70000")


def test_summary_line() -> None:
    status = {
        "state": "running",
        "watch": {"mode": "long-poll"},
        "running": {"partitions": {"job": "instance", "since": T0 - 3}},
        "next": {"report": T0 + 60, "software": None, "instance": T0 - 1},
        "master": {"errors": 2},
    }
    assert summary_line(status, T0) == (
        "running, watch: long-poll; partitions: instance for 3 s; next report in 60 s; "
        "master unreachable (2 errors)"
    )


def test_slapgrid_status_imports_no_agent_loop_nor_runs() -> None:
    """`slapgrid status` stays quick: reading the status file needs none of the agent."""
    code = "import sys, slapgrid.node.status; print(' '.join(sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "slapgrid.node.daemon.status_file" in loaded
    heavy = ("slapgrid.node.daemon.loop", "slapgrid.node.instance", "slapgrid.node.software")
    assert [name for name in loaded if name.startswith(heavy)] == []


def test_waker_wakes_on_poke_and_reports_signals() -> None:
    waker = Waker()
    try:
        assert waker.wait(0.01) == []
        threading.Timer(0.05, waker.poke).start()
        assert waker.wait(5) == []  # woken (well before the timeout), no signal
        with waker.signals((signal.SIGHUP,)):
            os.kill(os.getpid(), signal.SIGHUP)
            assert waker.wait(5) == [signal.SIGHUP]
    finally:
        waker.close()


def test_metrics_exposition() -> None:
    metrics = Metrics()
    metrics.run_finished("instance", "ok", 1.5, T0)
    metrics.partition_states({"started": 3, "free": 1})
    text = metrics.text()
    assert 'slapgrid_node_runs_total{job="instance",result="ok"} 1.0' in text
    assert 'slapgrid_node_partitions{state="started"} 3.0' in text
    assert 'slapgrid_node_run_duration_seconds_count{job="instance"} 1.0' in text
    assert "process_open_fds" in text  # the process collector, for leak hunting
