"""The row lookups that transitions and answers start from, as functions of a `Session`.

Each raises `NotFound` with the message a node or user sees, so callers never test for
`None` on what must exist.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from slapgrid.master.errors import NotFound
from slapgrid.master.tables import (
    BUSY,
    AddressRow,
    ComputerRow,
    PartitionRow,
    SharedRow,
    SoftwareRow,
)
from slapgrid.slap.documents import STARTED


def computer_row(session: Session, reference: str) -> ComputerRow:
    row = session.get(ComputerRow, reference)
    if row is None:
        raise NotFound(f"unknown computer {reference!r}")
    return row


def partition_row(session: Session, computer: str, reference: str) -> PartitionRow:
    query = select(PartitionRow).where(
        PartitionRow.computer == computer, PartitionRow.reference == reference
    )
    row = session.scalar(query)
    if row is None:
        computer_row(session, computer)
        raise NotFound(f"unknown partition {reference!r} on computer {computer!r}")
    return row


def busy_row(session: Session, computer: str, reference: str) -> PartitionRow:
    """A partition that hosts an instance."""
    row = partition_row(session, computer, reference)
    if row.slap_state != BUSY:
        raise NotFound(f"partition {reference!r} on computer {computer!r} hosts no instance")
    return row


def software_row(session: Session, computer: str, url: str) -> SoftwareRow | None:
    """The computer's installation of `url`, if it was ever supplied."""
    computer_row(session, computer)
    return session.scalar(
        select(SoftwareRow).where(SoftwareRow.computer == computer, SoftwareRow.url == url)
    )


def supplied_row(session: Session, computer: str, url: str) -> SoftwareRow:
    row = software_row(session, computer, url)
    if row is None:
        raise NotFound(f"software release {url!r} is not supplied to {computer!r}")
    return row


def shared_row(session: Session, guid: str) -> SharedRow:
    row = session.scalar(select(SharedRow).where(SharedRow.guid == guid))
    if row is None:
        raise NotFound(f"unknown shared instance {guid!r}")
    return row


def hosted_shared_row(session: Session, host: PartitionRow, guid: str) -> SharedRow:
    """A shared instance, which must be hosted by `host`."""
    shared = shared_row(session, guid)
    if shared.host_id != host.id:
        raise NotFound(f"shared instance {guid!r} is not hosted here")
    return shared


def title_taken(session: Session, row_type: Any, title: str, requested_by: str) -> bool:
    """Whether an instance (partition or shared) of that tree already has this title."""
    query = select(row_type.id).where(
        row_type.title == title, row_type.requested_by == requested_by
    )
    return session.scalar(query) is not None


def by_requester(session: Session, row_type: Any, partition: PartitionRow) -> list[Any]:
    """Instances (busy partitions, or shared instances) this partition requested."""
    query = select(row_type).where(
        row_type.requester_computer == partition.computer,
        row_type.requester_partition == partition.reference,
    )
    if row_type is PartitionRow:
        query = query.where(PartitionRow.slap_state == BUSY)
    return list(session.scalars(query.order_by(row_type.id)))


def descendants(session: Session, partition: PartitionRow) -> list[PartitionRow]:
    """Busy partitions requested, directly or not, by this one."""
    found: dict[int, PartitionRow] = {}
    pending = [partition]
    while pending:
        for child in by_requester(session, PartitionRow, pending.pop()):
            if child.id not in found and child.id != partition.id:
                found[child.id] = child
                pending.append(child)
    return list(found.values())


def tree(session: Session, root_title: str) -> list[PartitionRow]:
    """Every busy partition of the instance tree whose root is titled `root_title`."""
    query = select(PartitionRow).where(
        PartitionRow.slap_state == BUSY,
        or_(
            PartitionRow.requested_by == root_title,
            (PartitionRow.title == root_title) & (PartitionRow.requested_by == ""),
        ),
    )
    return list(session.scalars(query.order_by(PartitionRow.id)))


def addresses(session: Session, partition_ids: list[int]) -> dict[int, list[AddressRow]]:
    grouped: dict[int, list[AddressRow]] = defaultdict(list)
    if partition_ids:
        query = (
            select(AddressRow)
            .where(AddressRow.partition_id.in_(partition_ids))
            .order_by(AddressRow.id)
        )
        for address in session.scalars(query):
            grouped[address.partition_id].append(address)
    return grouped


def hosted(session: Session, host_ids: list[int]) -> dict[int, list[SharedRow]]:
    """The shared instances each host lists in its slave_instance_list."""
    grouped: dict[int, list[SharedRow]] = defaultdict(list)
    if host_ids:
        query = (
            select(SharedRow)
            .where(SharedRow.host_id.in_(host_ids), SharedRow.requested_state == STARTED)
            .order_by(SharedRow.id)
        )
        for shared in session.scalars(query):
            grouped[shared.host_id].append(shared)  # type: ignore[index]
    return grouped
