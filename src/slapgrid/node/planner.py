"""Pure decisions: desired state (from the master) + what is on disk → actions with reasons.

Nothing here touches the disk, the network or the clock: callers pass in what they
observed and the current time, and get back an ordered list of actions, each with a
one-line reason a person can read. Executors carry the actions out; `slapgrid plan` and
`--dry-run` only print them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from slapgrid.node.process_states import UP_STATES, Services
from slapgrid.slap.documents import (
    DESTROYED,
    PARTITION_STATES,
    STARTED,
    STOPPED,
    Computer,
    ComputerPartition,
    SoftwareRelease,
)

BACKOFF_BASE = 10.0
BACKOFF_CAP = 300.0


class Kind(enum.StrEnum):
    # software releases
    BUILD = "build"
    REMOVE_SOFTWARE = "remove-software"
    # partitions
    DEPLOY = "deploy"  # run buildout, then start or stop as requested
    CHECK = "check"  # up to date and started: run promises (anomaly mode) only
    START = "start"  # up to date but its services are down: start them, check, report
    STOP = "stop"  # requested destroyed (or stopped, yet running): stop processes, report
    DESTROY = "destroy"  # report run: wipe a destroyed partition, report destroyed
    CLEAN_FREE = "clean-free"  # free partition with agent left-overs
    ERROR = "error"  # cannot be processed: report the reason to the master
    SKIP = "skip"  # nothing to do (reason says why)
    WAIT = "wait"  # not yet: back-off not elapsed, or its software is being built


class Cause(enum.StrEnum):
    """Why an action was chosen, for code to test; `Action.reason` says it to people."""

    NEW = "new"  # never built or deployed
    CHANGED = "changed"  # the master's timestamp moved
    NO_TIMESTAMP = "no-timestamp"
    PERIODIC = "periodic"  # the periodicity elapsed (or is 0)
    FORCED = "forced"
    UNFINISHED = "unfinished"  # a build started and never wrote .completed
    RETRY = "retry"  # a back-off ended
    BACKING_OFF = "backing-off"
    UP_TO_DATE = "up-to-date"
    REQUESTED_DESTROYED = "requested-destroyed"
    ALREADY_GONE = "already-gone"
    STILL_USED = "still-used"  # software a partition still links to
    FREE = "free"
    LEFTOVERS = "leftovers"  # a free partition holding agent files
    INVALID = "invalid"  # the master's description cannot be used
    NO_DIRECTORY = "no-directory"  # tolerated, as the reference does
    UNSUPPORTED_STATE = "unsupported-state"
    SOFTWARE_BUILDING = "software-building"
    SOFTWARE_MISSING = "software-missing"
    NOT_A_PARTITION = "not-a-partition"  # a directory format did not make: never wiped
    PROMISE_FAILING = "promise-failing"  # failed too many periodic checks in a row: heal
    SERVICES_DOWN = "services-down"  # requested started, programs not running in supervisord
    SERVICES_RUNNING = "services-running"  # requested stopped, programs running


# actions that change something; the others are bookkeeping
WORK = frozenset(
    {Kind.BUILD, Kind.REMOVE_SOFTWARE, Kind.DEPLOY, Kind.START, Kind.STOP, Kind.DESTROY}
)


@dataclass(frozen=True)
class Failure:
    """The last failure of an item, kept on disk across runs for back-off."""

    at: float
    attempts: int
    message: str
    timestamp: str | None = None  # for partitions: the master timestamp that failed


@dataclass(frozen=True)
class FailedChecks:
    """Consecutive periodic checks of a partition a promise failed, kept across runs."""

    count: int
    promise: str  # the first failing promise of the last check
    message: str


@dataclass(frozen=True)
class BackoffPolicy:
    base: float = BACKOFF_BASE
    cap: float = BACKOFF_CAP

    def delay(self, attempts: int) -> float:
        """10 s, 20 s, 40 s … capped (kubelet's 300 s by default)."""
        return min(self.cap, self.base * 2 ** max(attempts - 1, 0))


@dataclass(frozen=True)
class Action:
    kind: Kind
    target: str  # partition id or software release URL
    cause: Cause
    reason: str
    state: str | None = None  # requested state it serves
    priority: int = 3  # 0 changed, 1 failed retry, 2 periodic, 3 the rest

    def __post_init__(self) -> None:
        # Cause and reason are both strings: a positional mix-up would otherwise pass silently
        if not isinstance(self.cause, Cause):
            raise TypeError(f"Action cause must be a Cause, not {self.cause!r}")

    @property
    def is_work(self) -> bool:
        return self.kind in WORK


@dataclass(frozen=True)
class SoftwareObservation:
    exists: bool  # the directory is there
    completed: bool  # .completed marker written
    used_by: tuple[str, ...] = ()  # partitions whose software_release link points here


@dataclass(frozen=True)
class PartitionObservation:
    exists: bool  # directory under the instance root
    deployed_timestamp: str | None = None  # content of .timestamp
    deployed_at: float | None = None  # mtime of .timestamp
    software_built: bool = False  # the partition's SR has .completed
    software_building: bool = False  # a run holds the SR's build lock
    periodicity: int | None = None  # the SR's periodicity file, if any
    leftovers: bool = False  # free partition holding agent files
    problem: str | None = None  # why the master's description cannot be used at all
    failed_checks: FailedChecks | None = None  # periodic checks failed in a row, if any
    services: Services | None = None  # None: supervisord was not asked (dry run, offline)


def _ago(seconds: float) -> str:
    seconds = max(seconds, 0)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _backoff_action(
    target: str, failure: Failure, now: float, policy: BackoffPolicy, state: str | None
) -> Action:
    """Retry if the back-off elapsed, else wait; both say when the failure happened."""
    delay = policy.delay(failure.attempts)
    due = failure.at + delay
    detail = (
        f"last run failed {_ago(now - failure.at)}, retry {failure.attempts + 1}, "
        f"back-off {delay:.0f} s"
    )
    if now < due:
        reason = f"{detail}, next in {due - now:.0f} s"
        return Action(Kind.WAIT, target, Cause.BACKING_OFF, reason, state)
    return Action(Kind.DEPLOY, target, Cause.RETRY, detail, state, priority=1)


def plan_software(
    releases: Iterable[SoftwareRelease],
    observed: Mapping[str, SoftwareObservation],
    failures: Mapping[str, Failure],
    now: float,
    *,
    force: bool = False,
    only: frozenset[str] = frozenset(),
    policy: BackoffPolicy = BackoffPolicy(),
) -> list[Action]:
    """What to do for each software release, changed and failed work first."""
    actions = []
    for release in releases:
        url = release.url
        if only and url not in only:
            continue
        seen = observed.get(url, SoftwareObservation(False, False))
        if release.state == DESTROYED:
            if seen.used_by:
                reason = f"still used by {', '.join(sorted(seen.used_by))}"
                actions.append(
                    Action(Kind.ERROR, url, Cause.STILL_USED, f"cannot remove: {reason}", DESTROYED)
                )
            elif seen.exists:
                actions.append(
                    Action(
                        Kind.REMOVE_SOFTWARE,
                        url,
                        Cause.REQUESTED_DESTROYED,
                        "requested destroyed",
                        DESTROYED,
                        0,
                    )
                )
            else:
                actions.append(
                    Action(
                        Kind.REMOVE_SOFTWARE,
                        url,
                        Cause.ALREADY_GONE,
                        "requested destroyed, already gone",
                        DESTROYED,
                    )
                )
            continue
        if seen.completed and not force:
            actions.append(Action(Kind.SKIP, url, Cause.UP_TO_DATE, "already built", release.state))
            continue
        failure = failures.get(url)
        if force:
            actions.append(
                Action(Kind.BUILD, url, Cause.FORCED, "forced rebuild", release.state, 0)
            )
        elif failure is not None:
            action = _backoff_action(url, failure, now, policy, release.state)
            kind = Kind.BUILD if action.kind == Kind.DEPLOY else action.kind
            actions.append(
                Action(kind, url, action.cause, action.reason, release.state, action.priority)
            )
        elif seen.exists:
            reason = "previous build did not finish"
            actions.append(Action(Kind.BUILD, url, Cause.UNFINISHED, reason, release.state, 0))
        else:
            actions.append(Action(Kind.BUILD, url, Cause.NEW, "not built yet", release.state, 0))
    return sorted(actions, key=lambda action: action.priority)


def _deploy_reason(
    partition: ComputerPartition,
    seen: PartitionObservation,
    now: float,
    periodicity: int,
) -> tuple[Cause, str, int] | None:
    """Why a busy partition must be deployed now, or None if it is up to date."""
    timestamp = partition.timestamp
    if timestamp is None:
        return Cause.NO_TIMESTAMP, "the master sent no timestamp", 0
    if seen.deployed_timestamp is None:
        return Cause.NEW, "never deployed", 0
    if seen.deployed_timestamp != timestamp:
        changed = f"parameters changed: timestamp {seen.deployed_timestamp} → {timestamp}"
        return Cause.CHANGED, changed, 0
    if periodicity == 0:
        return Cause.PERIODIC, "periodicity is 0: always processed", 2
    if periodicity > 0 and seen.deployed_at is not None and now > seen.deployed_at + periodicity:
        return Cause.PERIODIC, f"periodicity of {periodicity} s elapsed", 2
    return None


def plan_partition(
    partition: ComputerPartition,
    seen: PartitionObservation,
    failure: Failure | None,
    now: float,
    *,
    maximum_periodicity: int,
    force: bool = False,
    policy: BackoffPolicy = BackoffPolicy(),
    redeploy_after: int = 0,
) -> Action:
    """The one action `slapgrid instance` takes for this partition, and why.

    `redeploy_after` failed checks in a row redeploy a started partition (0: never).
    """
    pid, state = partition.partition_id, partition.requested_state
    if seen.problem is not None:
        return Action(Kind.ERROR, pid, Cause.INVALID, seen.problem, state)
    if partition.is_free:
        if seen.leftovers:
            reason = "free partition holding agent files"
            return Action(Kind.CLEAN_FREE, pid, Cause.LEFTOVERS, reason, state)
        return Action(Kind.SKIP, pid, Cause.FREE, "free partition", state)
    if not seen.exists:
        reason = "partition directory does not exist"
        return Action(Kind.ERROR, pid, Cause.NO_DIRECTORY, reason, state)
    if state not in PARTITION_STATES:
        reason = f"unsupported requested state {state!r}"
        return Action(Kind.ERROR, pid, Cause.UNSUPPORTED_STATE, reason, state)
    if state == DESTROYED:
        reason = "requested destroyed: stop and wait for report"
        return Action(Kind.STOP, pid, Cause.REQUESTED_DESTROYED, reason, state, 0)
    if not seen.software_built:
        url = partition.software_release_url
        if seen.software_building:  # not an error yet: the build's end brings a new run
            reason = f"software release {url} is being built"
            return Action(Kind.WAIT, pid, Cause.SOFTWARE_BUILDING, reason, state)
        reason = f"software release {url} is not built yet"
        return Action(Kind.ERROR, pid, Cause.SOFTWARE_MISSING, reason, state)
    if force:
        return Action(Kind.DEPLOY, pid, Cause.FORCED, "forced", state, 0)
    periodicity = maximum_periodicity if seen.periodicity is None else seen.periodicity
    why = _deploy_reason(partition, seen, now, periodicity)
    if failure is not None and (why is None or failure.timestamp == partition.timestamp):
        return _backoff_action(pid, failure, now, policy, state)
    if why is not None:
        cause, reason, priority = why
        return Action(Kind.DEPLOY, pid, cause, reason, state, priority)
    converge = _converge_services(pid, state, seen.services)
    if converge is not None:
        return converge
    checks = seen.failed_checks
    if state == STARTED and checks is not None and 0 < redeploy_after <= checks.count:
        reason = f"promise {checks.promise} failed {checks.count} checks in a row: redeploying"
        return Action(Kind.DEPLOY, pid, Cause.PROMISE_FAILING, reason, state, 1)
    if state == STARTED:
        return Action(Kind.CHECK, pid, Cause.UP_TO_DATE, "up to date: promises only", state)
    return Action(Kind.SKIP, pid, Cause.UP_TO_DATE, f"up to date ({STOPPED})", state)


def _converge_services(pid: str, state: str, services: Services | None) -> Action | None:
    """An up-to-date partition whose programs are not in the requested state, or None.

    The master's desired state rules: programs down (a reboot, a supervisord relaunch, a
    person's `supervisorctl stop`) are started, programs of a stopped partition stopped.
    """
    if services is None:
        return None
    if state == STARTED:
        if not services.declared:
            return None
        down = [str(p) for p in services.processes if p.down]
        if not services.processes:
            reason = "services not running: supervisord runs none of them"
        elif down:
            reason = f"services not running: {', '.join(down)}"
        else:
            return None
        return Action(Kind.START, pid, Cause.SERVICES_DOWN, reason, state, 0)
    running = [str(p) for p in services.processes if p.state in UP_STATES]
    if running:
        reason = f"requested {STOPPED}, but running: {', '.join(running)}"
        return Action(Kind.STOP, pid, Cause.SERVICES_RUNNING, reason, state, 0)
    return None


def plan_instances(
    computer: Computer,
    observed: Mapping[str, PartitionObservation],
    failures: Mapping[str, Failure],
    now: float,
    *,
    maximum_periodicity: int,
    force: bool = False,
    only: frozenset[str] = frozenset(),
    policy: BackoffPolicy = BackoffPolicy(),
    redeploy_after: int = 0,
) -> list[Action]:
    """One action per partition, changed and failed work first (stable within a priority)."""
    actions = [
        plan_partition(
            partition,
            observed.get(partition.partition_id, PartitionObservation(exists=False)),
            failures.get(partition.partition_id),
            now,
            maximum_periodicity=maximum_periodicity,
            force=force,
            policy=policy,
            redeploy_after=redeploy_after,
        )
        for partition in computer.partitions
        if not only or partition.partition_id in only
    ]
    return sorted(actions, key=lambda action: action.priority)


def plan_destruction(
    computer: Computer, observed: Mapping[str, PartitionObservation]
) -> list[Action]:
    """`slapgrid report`: busy partitions requested destroyed get wiped, then freed."""
    return [
        Action(
            Kind.DESTROY,
            p.partition_id,
            Cause.REQUESTED_DESTROYED,
            "requested destroyed",
            DESTROYED,
            0,
        )
        for p in computer.partitions
        if p.requested_state == DESTROYED
        and not p.is_free
        and observed.get(p.partition_id, PartitionObservation(False)).exists
    ]
