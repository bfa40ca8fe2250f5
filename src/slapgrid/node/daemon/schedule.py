"""What the agent runs next, and when: plain decisions over the current time, no I/O.

Every method takes `now`, so the unit tests drive the schedule with a fake clock; the loop
only carries its decisions out.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from slapgrid.node.config import NodeConfig
from slapgrid.node.planner import BackoffPolicy, Failure
from slapgrid.node.run_result import RunResult

if TYPE_CHECKING:
    from slapgrid.node.daemon.changes import Change

MASTER_BACKOFF_BASE = 5.0
MASTER_BACKOFF_CAP = 300.0
RETRY_MARGIN = 0.5  # wake a little after a back-off ends, so the planner sees it ended
NEVER = math.inf
BACKOFF = BackoffPolicy()  # the planner's default, which the one-shot runs use


class Job(enum.StrEnum):
    SOFTWARE = "software"
    INSTANCE = "instance"
    REPORT = "report"


class Lane(enum.StrEnum):
    """Jobs of one lane never overlap; the two lanes run side by side."""

    SOFTWARE = "software"
    PARTITIONS = "partitions"  # instance and report hold the same lock


LANE = {Job.SOFTWARE: Lane.SOFTWARE, Job.INSTANCE: Lane.PARTITIONS, Job.REPORT: Lane.PARTITIONS}


class Result(enum.StrEnum):
    OK = "ok"
    FAILED = "failed"  # some item failed; it has its own back-off
    PROMISE_FAILED = "promise-failed"
    OFFLINE = "offline"  # instance: master unreachable, known services started
    MASTER_ERROR = "master-error"
    LOCKED = "locked"  # another run holds the lock
    ERROR = "error"  # anything else (a configuration problem, a bug)

    @classmethod
    def of(cls, run: RunResult) -> Result:
        """The run's own status, under the name the status file and metrics use."""
        return cls[run.status.name]


MASTER_RESULTS = frozenset({Result.OFFLINE, Result.MASTER_ERROR})


@dataclass(frozen=True)
class Intervals:
    """Seconds between runs; `software` 0 means only on change or when a back-off ends."""

    instance: float = NodeConfig.instance_interval
    report: float = NodeConfig.report_interval
    software: float = NodeConfig.software_interval
    poll: float = NodeConfig.poll_interval
    lock_retry: float = 5.0  # another run holds the partitions lock

    @classmethod
    def of(cls, config: NodeConfig) -> Intervals:
        """The periods `[slapos]` sets; checked when the configuration loaded."""
        return cls(
            config.instance_interval,
            config.report_interval,
            config.software_interval,
            config.poll_interval,
        )


def master_backoff(errors: int) -> float:
    """5 s, 10 s, 20 s … 300 s after consecutive runs that could not reach the master."""
    return min(MASTER_BACKOFF_CAP, MASTER_BACKOFF_BASE * 2 ** max(errors - 1, 0))


def retry_times(
    failures: Mapping[str, Failure], policy: BackoffPolicy = BACKOFF
) -> dict[str, float]:
    """When each failed item's back-off ends: the planner retries it from then on."""
    return {key: f.at + policy.delay(f.attempts) + RETRY_MARGIN for key, f in failures.items()}


@dataclass(frozen=True)
class Start:
    """A run to start now, and why."""

    job: Job
    reason: str
    only: frozenset[str] = frozenset()  # instance: just these partitions (empty: all)

    @property
    def lane(self) -> Lane:
        return LANE[self.job]

    def describe(self) -> str:
        scope = f" of {', '.join(sorted(self.only))}" if self.only else ""
        return f"{self.job} run{scope}"


@dataclass(frozen=True)
class Finished:
    """What a run ended with, and what the daemon needs to plan the next ones."""

    start: Start
    result: Result
    duration: float
    detail: str = ""
    built: bool = False  # software: something was built, partitions may now deploy
    retry_at: Mapping[str, float] = field(default_factory=dict)  # back-offs in its store


@dataclass
class Schedule:
    """When each job is due and what is pending; every method takes the current time."""

    intervals: Intervals
    due: dict[Job, float]
    why: dict[Job, str]
    pending: dict[str, str] = field(default_factory=dict)  # partition → why
    retries: dict[str, float] = field(default_factory=dict)  # partition → back-off end
    running: dict[Lane, Start] = field(default_factory=dict)
    not_before: dict[Lane, float] = field(default_factory=dict)
    master_errors: int = 0
    master_retry_at: float = 0.0

    @classmethod
    def starting(cls, intervals: Intervals, now: float) -> Schedule:
        return cls(intervals, dict.fromkeys(Job, now), dict.fromkeys(Job, "agent started"))

    def _set(self, job: Job, at: float, why: str) -> None:
        self.due[job], self.why[job] = at, why

    def reconfigure(self, intervals: Intervals, now: float) -> None:
        """New periods apply at once when shorter than what is left of the old ones."""
        self.intervals = intervals
        for job in Job:
            every = getattr(intervals, job.value)
            if every and now + every < self.due[job]:
                self._set(job, now + every, "periodic run")

    def changed(self, change: Change, now: float) -> None:
        """The master asks for something new: act on it as soon as the lane is free."""
        self.pending.update(change.partitions)
        if change.software and self.due[Job.SOFTWARE] > now:
            self._set(Job.SOFTWARE, now, f"software list changed: {change.software}")
        if change.destroyed and self.due[Job.REPORT] > now:
            self._set(Job.REPORT, now, f"{', '.join(change.destroyed)} requested destroyed")

    def first_view(self, now: float) -> None:
        """The watcher's first view of the master is its baseline for changes, but it came
        after the start-up runs fetched their documents: what changed in between would wait
        for the periodic runs. Run both lanes once more, as soon as they are free."""
        for job in (Job.SOFTWARE, Job.INSTANCE):
            self._set(job, min(self.due[job], now), "first view of the master since start")

    def master_back(self, now: float) -> bool:
        """The master answers again: end the back-off, converge everything at once."""
        if not self.master_errors:
            return False
        self.master_errors, self.master_retry_at = 0, 0.0
        self._set(Job.INSTANCE, min(self.due[Job.INSTANCE], now), "the master is reachable again")
        return True

    def take(self, now: float) -> list[Start]:
        """The runs to start now; their lanes count as busy until `finished`."""
        if now < self.master_retry_at:
            return []
        starts = []
        for lane in Lane:
            if lane in self.running or now < self.not_before.get(lane, 0.0):
                continue
            start = self._next(lane, now)
            if start is not None:
                self.running[lane] = start
                starts.append(start)
        return starts

    def _next(self, lane: Lane, now: float) -> Start | None:
        if lane == Lane.SOFTWARE:
            return self._begin(Job.SOFTWARE) if self.due[Job.SOFTWARE] <= now else None
        retry = sorted(pid for pid, at in self.retries.items() if at <= now)
        if self.due[Job.INSTANCE] <= now:
            self.pending.clear()  # a full run covers them
            return self._begin(Job.INSTANCE)
        if self.pending or retry:
            reasons = dict.fromkeys(retry, "back-off ended") | self.pending
            for pid in retry:
                del self.retries[pid]
            self.pending = {}
            reason = "; ".join(f"{pid} {why}" for pid, why in sorted(reasons.items()))
            return Start(Job.INSTANCE, reason, frozenset(reasons))
        if self.due[Job.REPORT] <= now:
            return self._begin(Job.REPORT)
        return None

    def _begin(self, job: Job) -> Start:
        """A full run: not due again until it ends, unless something asks for it meanwhile."""
        self.due[job] = NEVER
        return Start(job, self.why[job])

    def _again(self, job: Job, at: float) -> None:
        if self.due[job] == NEVER:  # nothing asked for another run while this one ran
            self._set(job, at, "periodic run")

    def finished(self, done: Finished, now: float) -> None:
        start, job = done.start, done.start.job
        self.running.pop(start.lane, None)
        if done.result in MASTER_RESULTS or done.result == Result.LOCKED:
            if done.result == Result.LOCKED:
                self.not_before[start.lane] = now + self.intervals.lock_retry
            else:
                self.master_errors += 1
                self.master_retry_at = now + master_backoff(self.master_errors)
            if start.only:
                for pid in start.only:
                    self.pending.setdefault(pid, "not processed yet")
            else:  # still due: runs again when the back-off ends
                self.due[job] = min(self.due[job], now)
            return
        if done.result == Result.OK or (done.result == Result.FAILED and job != Job.INSTANCE):
            # the master answered (a failed instance run may have been offline without it)
            self.master_errors, self.master_retry_at = 0, 0.0
        future = {key: at for key, at in done.retry_at.items() if at > now}
        if job == Job.INSTANCE:
            if not start.only:
                self._again(job, now + self.intervals.instance)
            if done.result != Result.ERROR:  # an error leaves the back-offs as they were
                self.retries = future
        elif job == Job.REPORT:
            self._again(job, now + self.intervals.report)
        else:
            every = self.intervals.software
            self._again(job, now + every if every else NEVER)
            if future and min(future.values()) < self.due[job]:
                url = min(future, key=future.__getitem__)
                self._set(job, future[url], f"back-off of {url} ended")
            if done.built:
                self._set(Job.INSTANCE, min(self.due[Job.INSTANCE], now), "software was built")

    def after(self, done: Finished, now: float) -> str:
        """What comes next for the job that just finished, to end its log line."""
        start = done.start
        if done.result in MASTER_RESULTS:
            return f"; master back-off {self.master_retry_at - now:.0f} s"
        if done.result == Result.LOCKED:
            return f"; again in {self.intervals.lock_retry:g} s"
        if not start.only and math.isfinite(due := self.due[start.job]):
            return f"; next in {max(due - now, 0):.0f} s ({self.why[start.job]})"
        return ""

    def as_status(self, since: Mapping[Lane, float], now: float) -> dict[str, Any]:
        """The schedule's part of the status file (`since`: when each lane's run began)."""
        return {
            "running": {
                str(lane): {
                    "job": str(run.job),
                    "reason": run.reason,
                    "partitions": sorted(run.only),
                    "since": since.get(lane, now),
                }
                for lane, run in self.running.items()
            },
            "next": {str(job): (None if math.isinf(at) else at) for job, at in self.due.items()},
            "pending": sorted(self.pending),
            "retries": dict(self.retries),
            "master": {"errors": self.master_errors, "retry_at": self.master_retry_at},
        }

    def wake_at(self) -> float:
        """When `take` may next return something (NEVER when only an event can help)."""
        times = []
        for lane in Lane:
            if lane in self.running:
                continue
            if lane == Lane.SOFTWARE:
                candidates = [self.due[Job.SOFTWARE]]
            else:
                candidates = [self.due[Job.INSTANCE], self.due[Job.REPORT], *self.retries.values()]
                if self.pending:
                    candidates.append(0.0)
            times.append(max(min(candidates), self.not_before.get(lane, 0.0)))
        if not times:
            return NEVER
        return max(min(times), self.master_retry_at)
