"""Timestamps and generations: the µs clock, bumps that always move, and `Tx`.

A partition's `timestamp` tells its node to re-process it; a computer's `generation` tells
pollers that its getFullComputerInformation answer changed. `Tx` is a write in progress and
records both, so that the store bumps generations in the same transaction.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from slapgrid.master.tables import PartitionRow


def now_us() -> int:
    return time.time_ns() // 1000


def next_stamp(previous: int | None) -> int:
    """Now in µs, but always past `previous`: a bump must change the value."""
    return max(now_us(), (previous or 0) + 1)


def http_date(us: int) -> str:
    return email.utils.formatdate(us / 1e6, usegmt=True)


@dataclass
class Tx:
    """A write in progress: which computers' answers changed."""

    session: Session
    dirty: set[str] = field(default_factory=set)

    def touch(self, computer: str) -> None:
        self.dirty.add(computer)

    def bump(self, partition: PartitionRow) -> None:
        partition.timestamp = next_stamp(partition.timestamp)
        self.dirty.add(partition.computer)
