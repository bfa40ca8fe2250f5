"""Signals reach the agent's main loop through a self-pipe, between two decisions.

A signal handler that took a lock could deadlock against the thread it interrupted; here
the handlers do nothing and the main thread reads the signal numbers from the pipe.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
from collections.abc import Iterator
from types import FrameType

STOP = (signal.SIGTERM, signal.SIGINT)
RELOAD = signal.SIGHUP


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
