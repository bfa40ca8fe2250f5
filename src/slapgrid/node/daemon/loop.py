"""`slapgrid node`: the long-running agent that keeps the node converged.

`Daemon` carries out what `schedule.Schedule` decides: two lanes of work in threads
(software builds; instance and report runs, which share the partitions lock, see
`lane_work`), a watcher thread reporting what changed at the master (`changes`), and a main
thread that reads signals from a self-pipe (`signals`), so a signal never lands in the
middle of a lock it needs. The runs are the one-shot commands' own functions, holding the
same locks, so `slapgrid instance` can still be run by hand next to the agent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import random
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from slapgrid import __version__
from slapgrid.errors import SlapgridError
from slapgrid.exit_status import ExitStatus
from slapgrid.node import layout, lock
from slapgrid.node.config import NodeConfig
from slapgrid.node.daemon.changes import Observed, Snapshot, Watcher, WatchEvent, compare
from slapgrid.node.daemon.lane_work import run_job
from slapgrid.node.daemon.schedule import (
    MASTER_RESULTS,
    Finished,
    Intervals,
    Job,
    Lane,
    Result,
    Schedule,
    Start,
)
from slapgrid.node.daemon.signals import RELOAD, STOP, Waker
from slapgrid.node.daemon.status_file import StatusWriter, location
from slapgrid.slap.client import SlapClient

if TYPE_CHECKING:
    from slapgrid.node.daemon.metrics import Metrics

log = logging.getLogger(__name__)

MAX_SLEEP = 60.0  # re-read the clock at least this often (wall-clock jumps)
STOP_TIMEOUT = 60.0  # how long SIGTERM waits for cancelled work to end


class Daemon:
    """Runs until SIGTERM/SIGINT; SIGHUP re-reads the configuration."""

    def __init__(
        self,
        load: Callable[[], NodeConfig],
        connect: Callable[[NodeConfig], SlapClient],
        *,
        now: bool = False,
    ) -> None:
        self.load = load
        self.connect = connect
        self.now = now  # skip the random start delay (`maximal_delay`)
        self.config = load()
        self.intervals = Intervals.of(self.config)
        self.status_file = StatusWriter(location(self.config))  # a new one needs a restart
        self.metrics_port = self.config.metrics_port
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

    # -- main thread --------------------------------------------------------------------

    def run(self) -> ExitStatus:
        """Hold the node lock, serve until asked to stop; OK when every run ended cleanly."""
        with contextlib.ExitStack() as stack:
            stack.callback(self.waker.close)
            stack.enter_context(lock.hold(layout.daemon_lock(self.config.instance_root), "node"))
            stack.enter_context(self.waker.signals((*STOP, RELOAD)))
            if self.metrics_port:
                self.metrics.serve(self.metrics_port)
                stack.callback(self.metrics.close)
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
            self.status_file.path,
            f"; metrics on 127.0.0.1:{self.metrics_port}" if self.metrics_port else "",
            extra={"decision": "start-agent"},
        )

    def _start_delay(self) -> bool:
        """The reference's `maximal_delay`: spread many nodes' first runs; False if stopped."""
        if self.now or self.config.maximal_delay <= 0:
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
            if number in STOP:
                log.info(
                    "%s received: stopping",
                    signal.Signals(number).name,
                    extra={"decision": "stop"},
                )
                stop = True
            elif number == RELOAD:
                self._reload()
        return stop

    def _reload(self) -> None:
        try:
            config = self.load()
            intervals = Intervals.of(config)
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
        if self.snapshot is None:
            self.schedule.first_view(now)
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
        level = logging.INFO if done.result in (Result.OK, Result.FAILED) else logging.WARNING
        log.log(
            level,
            "%s finished: %s in %.1f s%s%s",
            start.describe(),
            done.result,
            done.duration,
            f" ({done.detail})" if done.detail else "",
            self.schedule.after(done, now),
            extra={
                "decision": "finished",
                "job": str(start.job),
                "result": str(done.result),
                "duration": round(done.duration, 3),
            },
        )

    def _work(self, start: Start, config: NodeConfig) -> None:
        """A lane thread: the run, then its end handed to the main loop."""
        self._post(run_job(start, config, self.connect, self.cancel))

    # -- stopping ------------------------------------------------------------------------

    def _shutdown(self) -> ExitStatus:
        self.state = "stopping"
        self.cancel.set()
        if self.watcher is not None:
            self.watcher.stop.set()
        if self.threads:
            log.info(
                "cancelling %s; waiting up to %g s",
                ", ".join(run.describe() for run in self.schedule.running.values()),
                STOP_TIMEOUT,
                extra={"decision": "stop"},
            )
        self._write_status()
        deadline = time.monotonic() + STOP_TIMEOUT
        while self.threads and (left := deadline - time.monotonic()) > 0:
            numbers = self.waker.wait(min(left, 1.0))
            if any(n in STOP for n in numbers):
                log.warning("second signal: exiting without waiting", extra={"decision": "stop"})
                break
            self._drain()
        clean = not self.threads
        if not clean:
            log.error("still running at exit: %s", ", ".join(self.threads))
        self.state = "stopped"
        self._write_status()
        log.info("slapgrid node stopped", extra={"decision": "stopped"})
        return ExitStatus.OK if clean else ExitStatus.FAILED

    # -- status --------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
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
            **self.schedule.as_status(self.since, time.time()),
            "last": self.last,
            "metrics": f"http://127.0.0.1:{self.metrics_port}/" if self.metrics_port else None,
        }

    def _write_status(self) -> None:
        self.status_file.write(self.status())
