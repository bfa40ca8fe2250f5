"""Timestamps and generations: the µs clock and bumps that always move.

A partition's `timestamp` tells its node to re-process it; a computer's `generation` tells
pollers that its getFullComputerInformation answer changed.
"""

from __future__ import annotations

import email.utils
import time


def now_us() -> int:
    return time.time_ns() // 1000


def next_stamp(previous: int | None) -> int:
    """Now in µs, but always past `previous`: a bump must change the value."""
    return max(now_us(), (previous or 0) + 1)


def http_date(us: int) -> str:
    return email.utils.formatdate(us / 1e6, usegmt=True)
