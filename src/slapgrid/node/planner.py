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
    STOP = "stop"  # requested destroyed: stop processes, report stopped
    DESTROY = "destroy"  # report run: wipe a destroyed partition, report destroyed
    CLEAN_FREE = "clean-free"  # free partition with agent left-overs
    ERROR = "error"  # cannot be processed: report the reason to the master
    SKIP = "skip"  # nothing to do (reason says why)
    WAIT = "wait"  # not yet: back-off not elapsed, or its software is being built


# actions that change something; the others are bookkeeping
WORK = frozenset({Kind.BUILD, Kind.REMOVE_SOFTWARE, Kind.DEPLOY, Kind.STOP, Kind.DESTROY})


@dataclass(frozen=True)
class Failure:
    """The last failure of an item, kept on disk across runs for back-off."""

    at: float
    attempts: int
    message: str
    timestamp: str | None = None  # for partitions: the master timestamp that failed


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
    reason: str
    state: str | None = None  # requested state it serves
    priority: int = 3  # 0 changed, 1 failed retry, 2 periodic, 3 the rest

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
        return Action(Kind.WAIT, target, f"{detail}, next in {due - now:.0f} s", state)
    return Action(Kind.DEPLOY, target, detail, state, priority=1)


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
                actions.append(Action(Kind.ERROR, url, f"cannot remove: {reason}", DESTROYED))
            elif seen.exists:
                actions.append(
                    Action(Kind.REMOVE_SOFTWARE, url, "requested destroyed", DESTROYED, 0)
                )
            else:
                actions.append(
                    Action(
                        Kind.REMOVE_SOFTWARE, url, "requested destroyed, already gone", DESTROYED
                    )
                )
            continue
        if seen.completed and not force:
            actions.append(Action(Kind.SKIP, url, "already built", release.state))
            continue
        failure = failures.get(url)
        if force:
            actions.append(Action(Kind.BUILD, url, "forced rebuild", release.state, 0))
        elif failure is not None:
            action = _backoff_action(url, failure, now, policy, release.state)
            kind = Kind.BUILD if action.kind == Kind.DEPLOY else action.kind
            actions.append(Action(kind, url, action.reason, release.state, action.priority))
        elif seen.exists:
            actions.append(
                Action(Kind.BUILD, url, "previous build did not finish", release.state, 0)
            )
        else:
            actions.append(Action(Kind.BUILD, url, "not built yet", release.state, 0))
    return sorted(actions, key=lambda action: action.priority)


def _deploy_reason(
    partition: ComputerPartition,
    seen: PartitionObservation,
    now: float,
    periodicity: int,
) -> tuple[str, int] | None:
    """Why a busy partition must be deployed now, or None if it is up to date."""
    timestamp = partition.timestamp
    if timestamp is None:
        return "the master sent no timestamp", 0
    if seen.deployed_timestamp is None:
        return "never deployed", 0
    if seen.deployed_timestamp != timestamp:
        return f"parameters changed: timestamp {seen.deployed_timestamp} → {timestamp}", 0
    if periodicity == 0:
        return "periodicity is 0: always processed", 2
    if periodicity > 0 and seen.deployed_at is not None and now > seen.deployed_at + periodicity:
        return f"periodicity of {periodicity} s elapsed", 2
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
) -> Action:
    """The one action `slapgrid instance` takes for this partition, and why."""
    pid, state = partition.partition_id, partition.requested_state
    if seen.problem is not None:
        return Action(Kind.ERROR, pid, seen.problem, state)
    if partition.is_free:
        if seen.leftovers:
            return Action(Kind.CLEAN_FREE, pid, "free partition holding agent files", state)
        return Action(Kind.SKIP, pid, "free partition", state)
    if not seen.exists:
        return Action(Kind.ERROR, pid, "partition directory does not exist", state)
    if state not in PARTITION_STATES:
        return Action(Kind.ERROR, pid, f"unsupported requested state {state!r}", state)
    if state == DESTROYED:
        return Action(Kind.STOP, pid, "requested destroyed: stop and wait for report", state, 0)
    if not seen.software_built:
        url = partition.software_release_url
        if seen.software_building:  # not an error yet: the build's end brings a new run
            return Action(Kind.WAIT, pid, f"software release {url} is being built", state)
        return Action(Kind.ERROR, pid, f"software release {url} is not built yet", state)
    if force:
        return Action(Kind.DEPLOY, pid, "forced", state, 0)
    periodicity = maximum_periodicity if seen.periodicity is None else seen.periodicity
    why = _deploy_reason(partition, seen, now, periodicity)
    if failure is not None and (why is None or failure.timestamp == partition.timestamp):
        return _backoff_action(pid, failure, now, policy, state)
    if why is not None:
        return Action(Kind.DEPLOY, pid, why[0], state, why[1])
    if state == STARTED:
        return Action(Kind.CHECK, pid, "up to date: promises only", state)
    return Action(Kind.SKIP, pid, f"up to date ({STOPPED})", state)


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
        Action(Kind.DESTROY, p.partition_id, "requested destroyed", DESTROYED, 0)
        for p in computer.partitions
        if p.requested_state == DESTROYED
        and not p.is_free
        and observed.get(p.partition_id, PartitionObservation(False)).exists
    ]
