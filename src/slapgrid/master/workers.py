"""`slapgrid master start --workers N`: one listening socket, N forked worker processes.

Each worker is a whole master (its own store, app and uvicorn server) on the socket the
parent bound, and the kernel spreads connections among them. Workers share no memory: a
PostgreSQL database keeps them coherent (`notifications`). The parent only supervises. It
forks with no other thread and no database connection open, restarts a worker that dies
(later each time one dies young, so a worker failing at start does not spin), and on
SIGTERM or SIGINT stops them all (each answers its open long polls first) and returns.
A worker whose parent dies (even by SIGKILL) is stopped too, so none is left holding the
port.

The parent waits for signals with `sigtimedwait` while they are blocked: no handler runs
at an awkward moment, and no signal between two checks is lost.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("slapgrid.master")

RESTART_BASE = 0.5  # seconds before a dead worker is replaced, doubled each young death
RESTART_CAP = 30.0
HEALTHY_AFTER = 10.0  # seconds: a worker that lived this long did not die young
STOP_TIMEOUT = 15.0  # seconds the workers have to stop before they are killed
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
WAITED = frozenset({signal.SIGCHLD, *STOP_SIGNALS})
PR_SET_PDEATHSIG = 1  # Linux's prctl: a signal for this process when its parent dies


def restart_delay(young_deaths: int) -> float:
    """0.5 s, 1 s, 2 s … 30 s: how long a worker slot waits after its n-th young death."""
    return min(RESTART_CAP, RESTART_BASE * 2 ** max(young_deaths - 1, 0))


@dataclass
class Slot:
    """One of the N workers: the process filling it now, or when it is filled again."""

    number: int
    pid: int = 0
    started: float = 0.0
    young_deaths: int = 0
    restart_at: float = 0.0


def supervise(workers: int, run_worker: Callable[[], None]) -> None:
    """Run `run_worker()` in `workers` forked processes until SIGTERM or SIGINT."""
    if threading.active_count() != 1:
        raise RuntimeError("workers are forked from a process with no other thread")
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, WAITED)
    slots = [Slot(number) for number in range(1, workers + 1)]
    try:
        while True:
            now = time.monotonic()
            for slot in slots:
                if not slot.pid and slot.restart_at <= now:
                    _start(slot, run_worker, mask)
            waiting = [slot.restart_at - now for slot in slots if not slot.pid]
            received = signal.sigtimedwait(WAITED, max(min(waiting, default=60.0), 0.0))
            if received is not None and received.si_signo in STOP_SIGNALS:
                break
            _reap(slots, stopping=False)
    finally:
        _stop(slots)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _start(slot: Slot, run_worker: Callable[[], None], mask: set[signal.Signals]) -> None:
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the worker: never returns into the parent's code
        code = 1
        try:
            _stop_with_parent(parent)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            run_worker()
            code = 0
        except (KeyboardInterrupt, SystemExit):
            code = 0
        except Exception as exc:
            log.error("worker %d stopped: %s", slot.number, exc)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    slot.pid, slot.started = pid, time.monotonic()
    log.info("worker %d started (pid %d)", slot.number, pid)


def _stop_with_parent(parent: int) -> None:
    """SIGTERM for this worker when its parent dies, or now if it already has (Linux)."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        raise SystemExit(0)


def _reap(slots: list[Slot], *, stopping: bool) -> None:
    """Collect the workers that ended; unless `stopping`, schedule their replacement."""
    by_pid = {slot.pid: slot for slot in slots if slot.pid}
    while by_pid:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        slot = by_pid.pop(pid, None)
        if slot is None:
            continue
        slot.pid = 0
        if stopping:
            continue
        now = time.monotonic()
        slot.young_deaths = 0 if now - slot.started >= HEALTHY_AFTER else slot.young_deaths
        slot.young_deaths += 1
        delay = restart_delay(slot.young_deaths)
        slot.restart_at = now + delay
        log.warning(
            "worker %d (pid %d) %s: replaced in %g s", slot.number, pid, _ending(status), delay
        )


def _ending(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def _stop(slots: list[Slot]) -> None:
    """SIGTERM to every worker; SIGKILL to those still there after `STOP_TIMEOUT`."""
    running = [slot for slot in slots if slot.pid]
    if running:
        log.info("stopping %d workers", len(running))
    for slot in running:
        _signal(slot.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while any(slot.pid for slot in slots):
        left = deadline - time.monotonic()
        if left <= 0:
            for slot in slots:
                if slot.pid:
                    log.warning("worker %d (pid %d) did not stop: killed", slot.number, slot.pid)
                    _signal(slot.pid, signal.SIGKILL)
                    os.waitpid(slot.pid, 0)
                    slot.pid = 0
            return
        signal.sigtimedwait(WAITED, left)
        _reap(slots, stopping=True)


def _signal(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # dead already, not reaped yet
        os.kill(pid, signum)
