"""Waiting on a condition instead of sleeping: a busy machine stretches every delay."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float = 15.0,
    what: str = "the condition",
    step: float = 0.05,
) -> T:
    """The predicate's first truthy value; an AssertionError naming `what` after `timeout`.

    An OSError counts as "not yet": a log not written, a port not listening.
    """
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):
            value = predicate()
            if value:
                return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)
