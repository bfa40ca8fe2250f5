"""`Tx`, a write in progress: which partitions to re-process and which answers changed.

The store bumps the generations of the computers a `Tx` touched in the same database
transaction, so an answer and its generation never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from slapgrid.master.stamps import next_stamp
from slapgrid.master.tables import PartitionRow


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
