"""`slapgrid node` decisions: what runs next and when, driven by a fake clock."""

from __future__ import annotations

import math

import pytest

from slapgrid.exit_status import ExitStatus
from slapgrid.node.daemon.changes import Change, error_backoff
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
from slapgrid.node.planner import Failure
from slapgrid.node.run_result import RunResult
from support.clock import T0, Clock

INTERVALS = Intervals(instance=60, report=3600, software=600, lock_retry=5)


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
