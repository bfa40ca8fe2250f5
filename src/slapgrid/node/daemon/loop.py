"""`slapgrid node`: the long-running agent that keeps the node converged.

What to run next, and when, is decided by `Schedule` — plain methods over the current time,
unit-tested with a fake clock. `Daemon` carries the decisions out: two lanes of work in
threads (software builds; instance and report runs, which share the partitions lock), a
watcher thread reporting what changed at the master, and a main thread that reads signals
from a self-pipe, so a signal never lands in the middle of a lock it needs. The runs are
the one-shot commands' own functions, holding the same locks, so `slapgrid instance` can
still be run by hand next to the agent.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import json
import logging
import math
import os
import queue
import random
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import psutil

from slapgrid import __version__
from slapgrid.errors import ConfigError, LockedError, SlapgridError
from slapgrid.exit_status import ExitStatus
from slapgrid.node import layout, lock
from slapgrid.node.config import NodeConfig, parse_float, parse_int
from slapgrid.node.daemon.changes import Change, Observed, Snapshot, Watcher, WatchEvent, compare
from slapgrid.node.files import atomic_write, read_text
from slapgrid.node.instance.run import run_instance
from slapgrid.node.planner import BackoffPolicy, Failure
from slapgrid.node.report.run import ReportError, run_report
from slapgrid.node.run_result import RunResult
from slapgrid.node.software.run import run_software
from slapgrid.slap.client import SlapClient
from slapgrid.slap.errors import SlapError

if TYPE_CHECKING:
    from slapgrid.node.daemon.metrics import Metrics

log = logging.getLogger(__name__)

MASTER_BACKOFF_BASE = 5.0
MASTER_BACKOFF_CAP = 300.0
RETRY_MARGIN = 0.5  # wake a little after a back-off ends, so the planner sees it ended
MAX_SLEEP = 60.0  # re-read the clock at least this often (wall-clock jumps)
STOP_TIMEOUT = 60.0  # how long SIGTERM waits for cancelled work to end
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


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Intervals:
    """Seconds between runs; `software` 0 means only on change or when a back-off ends."""

    instance: float = 60.0
    report: float = 3600.0
    software: float = 3600.0
    poll: float = 10.0  # fetching the document, against masters without a change feed
    lock_retry: float = 5.0  # another run holds the partitions lock


def intervals_from(config: NodeConfig) -> Intervals:
    """`[slapos] instance_interval`, `report_interval`, `software_interval`, `poll_interval`."""
    defaults = Intervals()
    values = {}
    for name in ("instance", "report", "software", "poll"):
        option = f"{name}_interval"
        raw = config.extra.get(option, "").strip()
        value = parse_float(raw, option) if raw else getattr(defaults, name)
        if value < 0 or (value == 0 and name != "software") or not math.isfinite(value):
            raise ConfigError(f"option '{option}' must be a positive number of seconds")
        values[name] = value
    return replace(defaults, **values)


def status_path(config: NodeConfig) -> Path:
    """`[slapos] status_file`, else `<instance_root>/.slapgrid/daemon.json`."""
    configured = config.extra.get("status_file", "").strip()
    return (
        Path(configured).expanduser() if configured else layout.daemon_status(config.instance_root)
    )


def metrics_port(config: NodeConfig) -> int | None:
    raw = config.extra.get("metrics_port", "").strip()
    port = parse_int(raw, "metrics_port") if raw else 0
    if not 0 <= port < 65536:
        raise ConfigError("option 'metrics_port' must be a TCP port (0 turns metrics off)")
    return port or None


# --- decisions (pure) ------------------------------------------------------------------------


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


# --- I/O helpers -------------------------------------------------------------------------------


class Waker:
    """A self-pipe the main thread sleeps on: threads poke it, signals are written to it.

    `signal.set_wakeup_fd` makes the interpreter write each signal's number there, so the
    handlers do nothing and the main loop learns about signals between two decisions.
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        for descriptor in (self._read, self._write):
            flags = fcntl.fcntl(descriptor, fcntl.F_GETFL)
            fcntl.fcntl(descriptor, fcntl.F_SETFL, flags | os.O_NONBLOCK)

    def poke(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._write, b"\0")

    def wait(self, timeout: float) -> list[int]:
        """Sleep until poked, signalled or `timeout`; the signal numbers received."""
        readable, _, _ = select.select([self._read], [], [], max(timeout, 0.0))
        received = b""
        while readable:
            try:
                chunk = os.read(self._read, 512)
            except BlockingIOError:
                break
            received += chunk
            if len(chunk) < 512:
                break
        return [number for number in received if number]

    @contextlib.contextmanager
    def signals(self, numbers: tuple[int, ...]) -> Iterator[None]:
        def ignore(_signum: int, _frame: FrameType | None) -> None:
            """The wake-up descriptor carries the signal; nothing to do here."""

        previous = {number: signal.signal(number, ignore) for number in numbers}
        old_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        try:
            yield
        finally:
            signal.set_wakeup_fd(old_fd)
            for number, handler in previous.items():
                signal.signal(number, handler)

    def close(self) -> None:
        os.close(self._read)
        os.close(self._write)


def read_status(config: NodeConfig) -> dict[str, Any] | None:
    """The daemon's status file for `slapgrid status`, with whether its process still lives."""
    text = read_text(status_path(config))
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    pid = data.get("pid")
    alive = isinstance(pid, int) and psutil.pid_exists(pid) and data.get("state") != "stopped"
    data["alive"] = alive
    return data


def summary_line(status: Mapping[str, Any], now: float) -> str:
    """One line on what the daemon does, for the terminal and `slapgrid status`."""
    parts = [f"{status.get('state', '?')}, watch: {status.get('watch', {}).get('mode')}"]
    for lane, run in sorted((status.get("running") or {}).items()):
        parts.append(f"{lane}: {run['job']} for {now - run['since']:.0f} s")
    upcoming = [
        f"{job} in {at - now:.0f} s"
        for job, at in sorted((status.get("next") or {}).items())
        if at is not None and at > now
    ]
    if upcoming:
        parts.append("next " + ", ".join(upcoming))
    master = status.get("master") or {}
    if master.get("errors"):
        parts.append(f"master unreachable ({master['errors']} errors)")
    return "; ".join(parts)


@dataclass(frozen=True)
class DaemonOptions:
    now: bool = False  # skip the random start delay (`maximal_delay`)
    status_file: Path | None = None
    metrics_port: int | None = None
    progress: bool | None = None  # None: when stderr is a terminal
    stop_timeout: float = STOP_TIMEOUT


class TerminalView:
    """A live line at the bottom of the terminal; log lines scroll above it."""

    def __init__(self, render: Callable[[], str]) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.spinner import Spinner

        self._spinner = Spinner("dots")
        self._render = render
        self._live = Live(
            get_renderable=self._renderable,
            console=Console(stderr=True),
            transient=True,
            redirect_stderr=True,
            refresh_per_second=4,
        )
        self._streams: list[tuple[logging.StreamHandler[Any], Any]] = []

    def _renderable(self) -> Any:
        self._spinner.update(text=self._render())
        return self._spinner

    def __enter__(self) -> TerminalView:
        original = sys.stderr
        self._live.start()
        for handler in logging.getLogger().handlers:  # log through the live display
            if isinstance(handler, logging.StreamHandler) and handler.stream is original:
                self._streams.append((handler, handler.setStream(sys.stderr)))
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handler, stream in self._streams:
            handler.setStream(stream)
        self._live.stop()


# --- the daemon ------------------------------------------------------------------------------


class Daemon:
    """Runs until SIGTERM/SIGINT; SIGHUP re-reads the configuration."""

    def __init__(
        self,
        load: Callable[[], NodeConfig],
        connect: Callable[[NodeConfig], SlapClient],
        options: DaemonOptions = DaemonOptions(),
    ) -> None:
        self.load = load
        self.connect = connect
        self.options = options
        self.config = load()
        self.intervals = intervals_from(self.config)
        self.status_file = options.status_file or status_path(self.config)
        self.metrics_port = (
            options.metrics_port if options.metrics_port is not None else metrics_port(self.config)
        )
        from slapgrid.node.daemon.metrics import Metrics  # only the agent needs prometheus_client

        self.metrics: Metrics = Metrics()
        self.cancel = threading.Event()
        self.events: queue.SimpleQueue[tuple[Watcher | None, Finished | WatchEvent]] = (
            queue.SimpleQueue()
        )
        self.waker = Waker()
        self.schedule = Schedule.starting(self.intervals, time.time())
        self.snapshot: Snapshot | None = None
        self.seen_at: dict[str, float] = {}
        self.watcher: Watcher | None = None
        self.threads: dict[Lane, threading.Thread] = {}
        self.since: dict[Lane, float] = {}
        self.last: dict[str, dict[str, Any]] = {}
        self.watch: dict[str, Any] = {"mode": "connecting", "generation": None, "error": None}
        self.state = "starting"
        self.started_at = time.time()
        self._written = ""

    # -- main thread --------------------------------------------------------------------

    def run(self) -> int:
        """Hold the node lock, serve until asked to stop; 0 when every run ended cleanly."""
        with contextlib.ExitStack() as stack:
            stack.callback(self.waker.close)
            stack.enter_context(lock.hold(layout.daemon_lock(self.config.instance_root), "node"))
            stack.enter_context(self.waker.signals((signal.SIGTERM, signal.SIGINT, signal.SIGHUP)))
            if self.metrics_port:
                self.metrics.serve(self.metrics_port)
                stack.callback(self.metrics.close)
            progress = self.options.progress
            if progress if progress is not None else sys.stderr.isatty():
                stack.enter_context(TerminalView(lambda: summary_line(self.status(), time.time())))
            self._announce()
            try:
                if self._start_delay():
                    self._loop()
            except BaseException:  # a bug of ours: still cancel the buildouts, then report it
                self._shutdown()
                raise
            return self._shutdown()

    def _periods(self) -> str:
        i = self.intervals
        software = f"every {i.software:g} s and " if i.software else ""
        return (
            f"instance every {i.instance:g} s, report every {i.report:g} s, "
            f"software {software}on change"
        )

    def _announce(self) -> None:
        log.info(
            "slapgrid node %s started (pid %d): master %s, computer %s; %s; status in %s%s",
            __version__,
            os.getpid(),
            self.config.master_url,
            self.config.computer_id,
            self._periods(),
            self.status_file,
            f"; metrics on 127.0.0.1:{self.metrics_port}" if self.metrics_port else "",
            extra={"decision": "start-agent"},
        )

    def _start_delay(self) -> bool:
        """The reference's `maximal_delay`: spread many nodes' first runs; False if stopped."""
        if self.options.now or self.config.maximal_delay <= 0:
            return True
        delay = random.randint(1, self.config.maximal_delay)
        log.info("waiting %d s before the first run (maximal_delay)", delay)
        self.state = "delaying"
        self._write_status()
        deadline = time.monotonic() + delay
        while (left := deadline - time.monotonic()) > 0:
            if self._signals(self.waker.wait(left)):
                return False
        self.schedule = Schedule.starting(self.intervals, time.time())
        return True

    def _loop(self) -> None:
        self.state = "running"
        self._start_watcher()
        while True:
            now = time.time()
            for start in self.schedule.take(now):
                self._launch(start, now)
            self._write_status()
            sleep = min(self.schedule.wake_at() - time.time(), MAX_SLEEP)
            if self._signals(self.waker.wait(sleep)):
                return
            self._drain()

    def _signals(self, numbers: list[int]) -> bool:
        """Act on the signals received; True when the agent must stop."""
        stop = False
        for number in numbers:
            if number in (signal.SIGTERM, signal.SIGINT):
                log.info(
                    "%s received: stopping",
                    signal.Signals(number).name,
                    extra={"decision": "stop"},
                )
                stop = True
            elif number == signal.SIGHUP:
                self._reload()
        return stop

    def _reload(self) -> None:
        try:
            config = self.load()
            intervals = intervals_from(config)
        except SlapgridError as exc:
            log.error("configuration not reloaded: %s", exc, extra={"decision": "reload"})
            return
        moved = (config.master_url, config.computer_id, config.cert_file) != (
            self.config.master_url,
            self.config.computer_id,
            self.config.cert_file,
        )
        self.config, self.intervals = config, intervals
        self.schedule.reconfigure(intervals, time.time())
        if moved:  # another master or identity: start over from its document
            self.snapshot = None
            self._start_watcher()
            for job in (Job.SOFTWARE, Job.INSTANCE):
                self.schedule.due[job] = min(self.schedule.due[job], time.time())
        self._write_status()  # `slapgrid status` shows the new schedule once it is announced
        log.info(
            "configuration reloaded from %s: %s",
            config.source,
            self._periods(),
            extra={"decision": "reload"},
        )

    def _start_watcher(self) -> None:
        if self.watcher is not None:
            self.watcher.stop.set()
        watcher = Watcher(
            self.config,
            self.connect,
            lambda event: self._post(event, watcher),
            poll_interval=self.intervals.poll,
        )
        self.watcher = watcher
        watcher.start()

    def _post(self, event: Finished | WatchEvent, source: Watcher | None = None) -> None:
        """From any thread: hand an event to the main loop (`source`: the watcher it is from)."""
        self.events.put((source, event))
        self.waker.poke()

    def _drain(self) -> None:
        while True:
            try:
                source, event = self.events.get_nowait()
            except queue.Empty:
                return
            now = time.time()
            if isinstance(event, Finished):
                self._finished(event, now)
            elif source is not self.watcher:
                continue  # from a watcher replaced by a reload
            elif isinstance(event, Observed):
                self._observed(event, now)
            else:
                self.watch["error"] = event.message
                self.metrics.master_errors.inc()
                log.warning(
                    "cannot watch the master (attempt %d, again in %g s): %s",
                    event.attempts,
                    event.retry_in,
                    event.message,
                    extra={"decision": "watch-error"},
                )

    def _observed(self, event: Observed, now: float) -> None:
        self.watch.update(mode=event.mode, generation=event.generation, error=None, seen=now)
        self.metrics.partition_states(event.snapshot.partition_states())
        if event.recovered:
            converge = self.schedule.master_back(now)
            log.info(
                "the master answers again%s",
                ": converging every partition" if converge else "",
                extra={"decision": "recovered"},
            )
        change = compare(self.snapshot, event.snapshot)
        self.snapshot = event.snapshot
        if change.empty:
            if event.generation is not None:
                log.debug(
                    "generation %s: nothing the agent acts on changed",
                    event.generation,
                    extra={"decision": "unchanged"},
                )
            return
        for pid, what in change.partitions.items():
            self.seen_at.setdefault(pid, now)
            self.metrics.changes.labels("partition").inc()
            log.info(
                "%s changed: %s",
                pid,
                what,
                extra={"decision": "change", "partition": pid, "reason": what},
            )
        if change.software:
            self.metrics.changes.labels("software").inc()
            log.info(
                "software list changed: %s",
                change.software,
                extra={"decision": "change", "reason": change.software},
            )
        self.schedule.changed(change, now)

    def _launch(self, start: Start, now: float) -> None:
        for pid in start.only or list(self.seen_at):
            seen = self.seen_at.pop(pid, None)
            if seen is not None:
                self.metrics.reaction.observe(now - seen)
        log.info(
            "starting %s: %s",
            start.describe(),
            start.reason,
            extra={
                "decision": "run",
                "job": str(start.job),
                "partitions": sorted(start.only),
                "reason": start.reason,
            },
        )
        thread = threading.Thread(
            target=self._work, args=(start, self.config), name=str(start.job), daemon=True
        )
        self.threads[start.lane] = thread
        self.since[start.lane] = now
        thread.start()

    def _finished(self, done: Finished, now: float) -> None:
        start = done.start
        self.threads.pop(start.lane, None)
        self.since.pop(start.lane, None)
        self.schedule.finished(done, now)
        self.metrics.run_finished(str(start.job), str(done.result), done.duration, now)
        if done.result in MASTER_RESULTS:
            self.metrics.master_errors.inc()
        key = f"{start.job}-partial" if start.only else str(start.job)
        self.last[key] = {
            "result": str(done.result),
            "finished": now,
            "duration": round(done.duration, 3),
            "reason": start.reason,
            "detail": done.detail,
        }
        follow = ""
        if done.result in MASTER_RESULTS:
            follow = f"; master back-off {self.schedule.master_retry_at - now:.0f} s"
        elif done.result == Result.LOCKED:
            follow = f"; again in {self.intervals.lock_retry:g} s"
        elif not start.only and math.isfinite(due := self.schedule.due[start.job]):
            follow = f"; next in {max(due - now, 0):.0f} s ({self.schedule.why[start.job]})"
        level = logging.INFO if done.result in (Result.OK, Result.FAILED) else logging.WARNING
        log.log(
            level,
            "%s finished: %s in %.1f s%s%s",
            start.describe(),
            done.result,
            done.duration,
            f" ({done.detail})" if done.detail else "",
            follow,
            extra={
                "decision": "finished",
                "job": str(start.job),
                "result": str(done.result),
                "duration": round(done.duration, 3),
            },
        )

    # -- lane threads --------------------------------------------------------------------

    def _work(self, start: Start, config: NodeConfig) -> None:
        began = time.monotonic()
        detail, run = "", RunResult(ExitStatus.FAILED)
        try:
            with self.connect(config) as client:
                if start.job == Job.SOFTWARE:
                    run = run_software(config, client, cancel=self.cancel)
                elif start.job == Job.INSTANCE:
                    run = run_instance(config, client, only=start.only, cancel=self.cancel)
                else:
                    run = run_report(config, client)
            result = Result.of(run)
        except LockedError as exc:
            result, detail = Result.LOCKED, str(exc)
        except (SlapError, ReportError) as exc:
            result, detail = Result.MASTER_ERROR, str(exc)
        except SlapgridError as exc:
            result, detail = Result.ERROR, str(exc)
        except Exception as exc:  # a bug must not end the agent: log it, go on
            log.exception("%s failed unexpectedly", start.describe())
            result, detail = Result.ERROR, f"{type(exc).__name__}: {exc}"
        self._post(
            Finished(
                start,
                result,
                time.monotonic() - began,
                detail,
                built=run.built,
                retry_at=retry_times(run.failures),
            )
        )

    # -- stopping ------------------------------------------------------------------------

    def _shutdown(self) -> int:
        self.state = "stopping"
        self.cancel.set()
        if self.watcher is not None:
            self.watcher.stop.set()
        if self.threads:
            log.info(
                "cancelling %s; waiting up to %g s",
                ", ".join(run.describe() for run in self.schedule.running.values()),
                self.options.stop_timeout,
                extra={"decision": "stop"},
            )
        self._write_status()
        deadline = time.monotonic() + self.options.stop_timeout
        while self.threads and (left := deadline - time.monotonic()) > 0:
            numbers = self.waker.wait(min(left, 1.0))
            if any(n in (signal.SIGTERM, signal.SIGINT) for n in numbers):
                log.warning("second signal: exiting without waiting", extra={"decision": "stop"})
                break
            self._drain()
        clean = not self.threads
        if not clean:
            log.error("still running at exit: %s", ", ".join(self.threads))
        self.state = "stopped"
        self._write_status()
        log.info("slapgrid node stopped", extra={"decision": "stopped"})
        return 0 if clean else 1

    # -- status --------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        schedule = self.schedule
        return {
            "pid": os.getpid(),
            "version": __version__,
            "state": self.state,
            "started_at": self.started_at,
            "updated_at": time.time(),
            "configuration": str(self.config.source) if self.config.source else None,
            "master_url": self.config.master_url,
            "computer_id": self.config.computer_id,
            "watch": dict(self.watch),
            "running": {
                str(lane): {
                    "job": str(run.job),
                    "reason": run.reason,
                    "partitions": sorted(run.only),
                    "since": self.since.get(lane, time.time()),
                }
                for lane, run in schedule.running.items()
            },
            "next": {
                str(job): (None if math.isinf(at) else at) for job, at in schedule.due.items()
            },
            "pending": sorted(schedule.pending),
            "retries": dict(schedule.retries),
            "master": {"errors": schedule.master_errors, "retry_at": schedule.master_retry_at},
            "last": self.last,
            "metrics": f"http://127.0.0.1:{self.metrics_port}/" if self.metrics_port else None,
        }

    def _write_status(self) -> None:
        """Rewrite the status file when something in it changed (`updated_at` aside)."""
        status = self.status()
        text = json.dumps({**status, "updated_at": None}, sort_keys=True)
        if text == self._written:
            return
        try:
            self.status_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.status_file, json.dumps(status, indent=1), 0o644)
        except OSError as exc:
            log.warning("cannot write the status file %s: %s", self.status_file, exc)
        else:
            self._written = text


def run_node(
    load: Callable[[], NodeConfig],
    connect: Callable[[NodeConfig], SlapClient],
    options: DaemonOptions = DaemonOptions(),
) -> int:
    """`slapgrid node`: run the agent in this (main) thread until stopped; the exit code."""
    return Daemon(load, connect, options).run()
