"""The planner as a pure function: table-driven, no file system, no network, no clock."""

from __future__ import annotations

import pytest

from slapgrid.node.planner import (
    Action,
    BackoffPolicy,
    Cause,
    FailedChecks,
    Failure,
    Kind,
    PartitionObservation,
    SoftwareObservation,
    plan_destruction,
    plan_instances,
    plan_partition,
    plan_software,
)
from slapgrid.node.process_states import ProcessState, Services
from slapgrid.slap.documents import Computer, ComputerPartition, SoftwareRelease

NOW = 1_800_000_000.0
SR = "https://example.com/sr/software.cfg"
DAY = 86400


def busy(state: str = "started", timestamp: str | None = "1700000000000001", pid="p0"):
    parameters = {} if timestamp is None else {"timestamp": timestamp}
    return ComputerPartition("C", pid, state, SoftwareRelease(SR, "C"), parameters, {}, "G")


def deployed(timestamp: str = "1700000000000001", age: float = 60, **extra) -> PartitionObservation:
    return PartitionObservation(
        exists=True,
        deployed_timestamp=timestamp,
        deployed_at=NOW - age,
        software_built=True,
        **extra,
    )


# fmt: off
CASES = [
    # (name, partition, observation, failure, kwargs, kind, reason fragment)
    ("free", ComputerPartition("C", "p0"), PartitionObservation(True), None, {}, Kind.SKIP,
     "free partition"),
    ("free with leftovers", ComputerPartition("C", "p0"),
     PartitionObservation(True, leftovers=True), None, {}, Kind.CLEAN_FREE, "agent files"),
    ("missing directory", busy(), PartitionObservation(False), None, {}, Kind.ERROR,
     "does not exist"),
    ("bad state", busy("paused"), deployed(), None, {}, Kind.ERROR, "unsupported"),
    ("SR not built", busy(), PartitionObservation(True), None, {}, Kind.ERROR,
     f"software release {SR} is not built yet"),
    ("SR being built", busy(), PartitionObservation(True, software_building=True), None, {},
     Kind.WAIT, f"software release {SR} is being built"),
    ("destroyed", busy("destroyed"), deployed(), None, {}, Kind.STOP, "requested destroyed"),
    ("never deployed", busy(), PartitionObservation(True, software_built=True), None, {},
     Kind.DEPLOY, "never deployed"),
    ("parameters changed", busy(timestamp="1700000000000002"), deployed(), None, {},
     Kind.DEPLOY, "parameters changed: timestamp 1700000000000001 → 1700000000000002"),
    ("no timestamp", busy(timestamp=None), deployed(), None, {}, Kind.DEPLOY,
     "no timestamp"),
    ("up to date started", busy(), deployed(), None, {}, Kind.CHECK, "promises only"),
    ("up to date stopped", busy("stopped"), deployed(), None, {}, Kind.SKIP, "up to date"),
    ("periodicity elapsed", busy(), deployed(age=DAY + 1), None, {}, Kind.DEPLOY,
     "periodicity of 86400 s elapsed"),
    ("SR periodicity file", busy(), deployed(age=120, periodicity=60), None, {}, Kind.DEPLOY,
     "periodicity of 60 s elapsed"),
    ("periodicity zero", busy(), deployed(periodicity=0), None, {}, Kind.DEPLOY,
     "periodicity is 0"),
    ("negative periodicity never expires", busy(), deployed(age=10 * DAY, periodicity=-1), None,
     {}, Kind.CHECK, "promises only"),
    ("forced", busy(), deployed(), None, {"force": True}, Kind.DEPLOY, "forced"),
    ("failed, back-off running", busy(), PartitionObservation(True, software_built=True),
     Failure(NOW - 5, 1, "boom", "1700000000000001"), {}, Kind.WAIT,
     "last run failed 5 s ago, retry 2, back-off 10 s, next in 5 s"),
    ("failed, back-off elapsed", busy(), PartitionObservation(True, software_built=True),
     Failure(NOW - 120, 3, "boom", "1700000000000001"), {}, Kind.DEPLOY,
     "last run failed 2 min ago, retry 4, back-off 40 s"),
    ("failed, back-off capped", busy(), PartitionObservation(True, software_built=True),
     Failure(NOW - 200, 30, "boom", "1700000000000001"), {}, Kind.WAIT, "back-off 300 s"),
    ("failed but parameters changed since", busy(timestamp="1700000000000009"),
     PartitionObservation(True, software_built=True),
     Failure(NOW - 1, 5, "boom", "1700000000000001"), {}, Kind.DEPLOY, "never deployed"),
]
# fmt: on


@pytest.mark.parametrize(
    ("partition", "seen", "failure", "kwargs", "kind", "reason"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_partition_decisions(partition, seen, failure, kwargs, kind, reason) -> None:  # type: ignore[no-untyped-def]
    action = plan_partition(partition, seen, failure, NOW, maximum_periodicity=DAY, **kwargs)
    assert action.kind == kind
    assert reason in action.reason


def test_instances_changed_then_failed_then_periodic_then_rest() -> None:
    computer = Computer(
        "C",
        partitions=[
            busy(pid="periodic"),
            busy(pid="uptodate"),
            busy(pid="retry"),
            busy(pid="changed", timestamp="1700000000000005"),
            ComputerPartition("C", "free"),
        ],
    )
    observed = {
        "periodic": deployed(age=DAY + 10),
        "uptodate": deployed(),
        "retry": PartitionObservation(True, software_built=True),
        "changed": deployed(),
        "free": PartitionObservation(True),
    }
    failures = {"retry": Failure(NOW - 3600, 2, "boom", "1700000000000001")}
    actions = plan_instances(computer, observed, failures, NOW, maximum_periodicity=DAY)
    assert [a.target for a in actions] == ["changed", "retry", "periodic", "uptodate", "free"]
    assert [a.is_work for a in actions] == [True, True, True, False, False]


def test_only_filter_and_missing_observation() -> None:
    computer = Computer("C", partitions=[busy(pid="a"), busy(pid="b")])
    actions = plan_instances(computer, {}, {}, NOW, maximum_periodicity=DAY, only=frozenset("b"))
    assert actions == [
        Action(Kind.ERROR, "b", Cause.NO_DIRECTORY, "partition directory does not exist", "started")
    ]


# fmt: off
SOFTWARE_CASES = [
    ("new", SoftwareRelease(SR), SoftwareObservation(False, False), None, {}, Kind.BUILD,
     "not built yet"),
    ("built", SoftwareRelease(SR), SoftwareObservation(True, True), None, {}, Kind.SKIP,
     "already built"),
    ("half built", SoftwareRelease(SR), SoftwareObservation(True, False), None, {}, Kind.BUILD,
     "did not finish"),
    ("forced", SoftwareRelease(SR), SoftwareObservation(True, True), None, {"force": True},
     Kind.BUILD, "forced"),
    ("failed, waiting", SoftwareRelease(SR), SoftwareObservation(True, False),
     Failure(NOW - 1, 1, "x"), {}, Kind.WAIT, "back-off 10 s"),
    ("failed, retry", SoftwareRelease(SR), SoftwareObservation(True, False),
     Failure(NOW - 100, 1, "x"), {}, Kind.BUILD, "retry 2"),
    ("destroy", SoftwareRelease(SR, requested_state="destroyed"), SoftwareObservation(True, True),
     None, {}, Kind.REMOVE_SOFTWARE, "requested destroyed"),
    ("destroy gone", SoftwareRelease(SR, requested_state="destroyed"),
     SoftwareObservation(False, False), None, {}, Kind.REMOVE_SOFTWARE, "already gone"),
    ("destroy in use", SoftwareRelease(SR, requested_state="destroyed"),
     SoftwareObservation(True, True, ("p1", "p0")), None, {}, Kind.ERROR,
     "still used by p0, p1"),
]
# fmt: on


@pytest.mark.parametrize(
    ("release", "seen", "failure", "kwargs", "kind", "reason"),
    [case[1:] for case in SOFTWARE_CASES],
    ids=[case[0] for case in SOFTWARE_CASES],
)
def test_software_decisions(release, seen, failure, kwargs, kind, reason) -> None:  # type: ignore[no-untyped-def]
    failures = {} if failure is None else {SR: failure}
    (action,) = plan_software([release], {SR: seen}, failures, NOW, **kwargs)
    assert action.kind == kind
    assert reason in action.reason


def test_software_only_filter() -> None:
    releases = [SoftwareRelease("a"), SoftwareRelease("b")]
    actions = plan_software(releases, {}, {}, NOW, only=frozenset({"b"}))
    assert [a.target for a in actions] == ["b"]


def test_destruction_only_for_busy_destroyed_present_partitions() -> None:
    computer = Computer(
        "C",
        partitions=[busy("destroyed", pid="gone"), busy("destroyed", pid="here"), busy(pid="up")],
    )
    observed = {"here": deployed(), "up": deployed()}
    assert [a.target for a in plan_destruction(computer, observed)] == ["here"]


def test_backoff_policy_doubles_and_caps() -> None:
    policy = BackoffPolicy(base=10, cap=300)
    assert [policy.delay(n) for n in (1, 2, 3, 6, 99)] == [10, 20, 40, 300, 300]


FAILING = FailedChecks(3, "check-web", "Promise 'check-web' failed with output: 502")


# fmt: off
HEALING = [
    # (name, partition, observation, failure, redeploy_after, kind, cause)
    ("3 failed checks of 3 redeploy", busy(), deployed(failed_checks=FAILING), None, 3,
     Kind.DEPLOY, Cause.PROMISE_FAILING),
    ("more than the limit redeploys", busy(), deployed(failed_checks=FAILING), None, 2,
     Kind.DEPLOY, Cause.PROMISE_FAILING),
    ("below the limit only checks", busy(), deployed(failed_checks=FAILING), None, 4,
     Kind.CHECK, Cause.UP_TO_DATE),
    ("0 never redeploys", busy(), deployed(failed_checks=FAILING), None, 0,
     Kind.CHECK, Cause.UP_TO_DATE),
    ("no failed check", busy(), deployed(), None, 3, Kind.CHECK, Cause.UP_TO_DATE),
    ("a stopped partition is not healed", busy("stopped"), deployed(failed_checks=FAILING), None,
     3, Kind.SKIP, Cause.UP_TO_DATE),
    ("a failed redeployment backs off", busy(), deployed(failed_checks=FAILING),
     Failure(NOW - 5, 1, "boom", "1700000000000001"), 3, Kind.WAIT, Cause.BACKING_OFF),
    ("its back-off over, it retries", busy(), deployed(failed_checks=FAILING),
     Failure(NOW - 60, 1, "boom", "1700000000000001"), 3, Kind.DEPLOY, Cause.RETRY),
    ("a change of parameters comes first", busy(timestamp="1700000000000002"),
     deployed(failed_checks=FAILING), None, 3, Kind.DEPLOY, Cause.CHANGED),
]
# fmt: on


@pytest.mark.parametrize(
    ("partition", "seen", "failure", "limit", "kind", "cause"),
    [case[1:] for case in HEALING],
    ids=[case[0] for case in HEALING],
)
def test_failing_promise_heals_after_consecutive_checks(  # type: ignore[no-untyped-def]
    partition, seen, failure, limit, kind, cause
) -> None:
    action = plan_partition(
        partition, seen, failure, NOW, maximum_periodicity=DAY, redeploy_after=limit
    )
    assert (action.kind, action.cause) == (kind, cause)
    if cause == Cause.PROMISE_FAILING:
        assert action.reason == "promise check-web failed 3 checks in a row: redeploying"
        assert action.is_work and action.priority == 1


def test_instances_pass_the_redeploy_limit_on() -> None:
    computer = Computer("C", partitions=[busy(pid="failing"), busy(pid="fine")])
    observed = {"failing": deployed(failed_checks=FAILING), "fine": deployed()}
    actions = plan_instances(computer, observed, {}, NOW, maximum_periodicity=DAY, redeploy_after=3)
    assert [(a.target, a.cause) for a in actions] == [
        ("failing", Cause.PROMISE_FAILING),
        ("fine", Cause.UP_TO_DATE),
    ]


def running(*processes: tuple[str, str, str], declared: bool = True) -> PartitionObservation:
    """Deployed, with supervisord's view of its programs (name, state, description)."""
    states = tuple(
        ProcessState(name, state, text, name.endswith("-on-watch"))
        for name, state, text in processes
    )
    return deployed(services=Services(declared, states))


WEB_UP = ("web-on-watch", "RUNNING", "pid 12, uptime 0:01:00")
WEB_DOWN = ("web-on-watch", "STOPPED", "Not started")


# fmt: off
CONVERGE_CASES = [
    # (name, requested state, observation, kind, cause, reason fragment)
    ("all running", "started", running(WEB_UP), Kind.CHECK, Cause.UP_TO_DATE, "promises only"),
    ("not started after a reboot", "started", running(WEB_UP, WEB_DOWN), Kind.START,
     Cause.SERVICES_DOWN, "services not running: web-on-watch (STOPPED Not started)"),
    ("stopped by hand", "started", running(("web-on-watch", "STOPPED", "Nov 30 00:01 AM")),
     Kind.START, Cause.SERVICES_DOWN, "web-on-watch (STOPPED Nov 30 00:01 AM)"),
    ("gave up", "started", running(("web-on-watch", "FATAL", "Exited too quickly")),
     Kind.START, Cause.SERVICES_DOWN, "(FATAL Exited too quickly)"),
    ("exited service", "started", running(("web-on-watch", "EXITED", "")), Kind.START,
     Cause.SERVICES_DOWN, "web-on-watch (EXITED)"),
    ("run-once script done", "started", running(WEB_UP, ("init", "EXITED", "")), Kind.CHECK,
     Cause.UP_TO_DATE, "promises only"),
    ("restarting by itself", "started", running(("web-on-watch", "BACKOFF", "")), Kind.CHECK,
     Cause.UP_TO_DATE, "promises only"),
    ("group lost", "started", running(), Kind.START, Cause.SERVICES_DOWN,
     "supervisord runs none of them"),
    ("no programs declared", "started", running(declared=False), Kind.CHECK, Cause.UP_TO_DATE,
     "promises only"),
    ("supervisord not read", "started", deployed(), Kind.CHECK, Cause.UP_TO_DATE, "promises"),
    ("stopped stays stopped", "stopped", running(WEB_DOWN), Kind.SKIP, Cause.UP_TO_DATE,
     "up to date (stopped)"),
    ("stopped yet running", "stopped", running(WEB_UP), Kind.STOP, Cause.SERVICES_RUNNING,
     "requested stopped, but running: web-on-watch (RUNNING pid 12"),
]
# fmt: on


@pytest.mark.parametrize(
    ("state", "seen", "kind", "cause", "reason"),
    [case[1:] for case in CONVERGE_CASES],
    ids=[case[0] for case in CONVERGE_CASES],
)
def test_up_to_date_partition_converges_to_its_requested_state(  # type: ignore[no-untyped-def]
    state, seen, kind, cause, reason
) -> None:
    action = plan_partition(busy(state), seen, None, NOW, maximum_periodicity=DAY)
    assert (action.kind, action.cause) == (kind, cause)
    assert reason in action.reason
    assert action.priority == (0 if action.is_work else 3)


def test_services_down_wait_for_a_back_off_and_yield_to_a_deployment() -> None:
    down = running(WEB_DOWN)
    failure = Failure(NOW - 5, 1, "boom", "1700000000000001")
    waiting = plan_partition(busy(), down, failure, NOW, maximum_periodicity=DAY)
    assert waiting.kind == Kind.WAIT
    changed = plan_partition(
        busy(timestamp="1700000000000002"), down, None, NOW, maximum_periodicity=DAY
    )
    assert (changed.kind, changed.cause) == (Kind.DEPLOY, Cause.CHANGED)
