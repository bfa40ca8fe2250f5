"""The row lookups that transitions and answers start from, as functions of a `Session`.

Each raises `NotFound` with the message a node or user sees, so callers never test for
`None` on what must exist. The statements of frequent calls are built once, with bound
parameters: building one costs more than running it on an indexed table. What is only read
(addresses, hosted shared instances, a computer's document) comes as plain rows, not ORM
objects: loading those costs three times the query.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import Connection, Row, bindparam, or_, select
from sqlalchemy.orm import Session

from slapgrid.master.errors import NotFound
from slapgrid.master.tables import (
    BUSY,
    FREE,
    AddressRow,
    ComputerRow,
    PartitionRow,
    SharedRow,
    SoftwareRow,
)
from slapgrid.slap.documents import STARTED

Reader = Session | Connection
"""Where plain rows are read from: a session, or a bare connection (no ORM to set up)."""

_PARTITION = select(PartitionRow).where(
    PartitionRow.computer == bindparam("computer"), PartitionRow.reference == bindparam("reference")
)
_PARTITIONS_OF = (
    select(PartitionRow)
    .where(PartitionRow.computer == bindparam("computer"))
    .order_by(PartitionRow.id)
)
_FREE = _PARTITIONS_OF.where(PartitionRow.slap_state == FREE).limit(1)
_BUSY_TITLED = select(PartitionRow).where(
    PartitionRow.title == bindparam("title"),
    PartitionRow.requested_by == bindparam("root"),
    PartitionRow.slap_state == BUSY,
)
_SHARED_TITLED = select(SharedRow).where(
    SharedRow.title == bindparam("title"), SharedRow.requested_by == bindparam("root")
)
_SOFTWARE_OF = (
    select(SoftwareRow.url, SoftwareRow.requested_state)
    .where(SoftwareRow.computer == bindparam("computer"))
    .order_by(SoftwareRow.id)
)
_PARTITION_ROWS = (
    select(PartitionRow.__table__)
    .where(PartitionRow.__table__.c.computer == bindparam("computer"))
    .order_by(PartitionRow.__table__.c.id)
)
_SOFTWARE = select(SoftwareRow).where(
    SoftwareRow.computer == bindparam("computer"), SoftwareRow.url == bindparam("url")
)
_ADDRESS, _SHARED = AddressRow.__table__.c, SharedRow.__table__.c
_ADDRESSES = (
    select(AddressRow.__table__)
    .where(_ADDRESS.partition_id.in_(bindparam("ids", expanding=True)))
    .order_by(_ADDRESS.id)
)
_HOSTED = (
    select(SharedRow.__table__)
    .where(_SHARED.host_id.in_(bindparam("ids", expanding=True)))
    .where(_SHARED.requested_state == STARTED)
    .order_by(_SHARED.id)
)
_GENERATION = select(ComputerRow.generation).where(ComputerRow.reference == bindparam("computer"))
_GENERATIONS = select(ComputerRow.reference, ComputerRow.generation).where(
    ComputerRow.reference.in_(bindparam("computers", expanding=True))
)
_BY_REQUESTER = {
    row_type: select(row_type)
    .where(
        row_type.requester_computer == bindparam("computer"),
        row_type.requester_partition == bindparam("reference"),
    )
    .order_by(row_type.id)
    for row_type in (PartitionRow, SharedRow)
}
_TREE = (
    select(PartitionRow)
    .where(
        PartitionRow.slap_state == BUSY,
        or_(
            PartitionRow.requested_by == bindparam("root"),
            (PartitionRow.title == bindparam("root")) & (PartitionRow.requested_by == ""),
        ),
    )
    .order_by(PartitionRow.id)
)


def computer_row(session: Session, reference: str) -> ComputerRow:
    row = session.get(ComputerRow, reference)
    if row is None:
        raise NotFound(f"unknown computer {reference!r}")
    return row


def partition_row(session: Session, computer: str, reference: str) -> PartitionRow:
    row = session.scalar(_PARTITION, {"computer": computer, "reference": reference})
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


def partitions_of(session: Session, computer: str) -> list[PartitionRow]:
    """Every partition of the computer, in the order they were declared."""
    return list(session.scalars(_PARTITIONS_OF, {"computer": computer}))


def free_partition(session: Session, computer: str) -> PartitionRow | None:
    """The computer's first free partition."""
    return session.scalar(_FREE, {"computer": computer})


def busy_titled(session: Session, title: str, root_title: str) -> PartitionRow | None:
    """The partition instance titled `title` in the tree of `root_title` ("": a root)."""
    return session.scalar(_BUSY_TITLED, {"title": title, "root": root_title})


def shared_titled(session: Session, title: str, root_title: str) -> SharedRow | None:
    return session.scalar(_SHARED_TITLED, {"title": title, "root": root_title})


def generation(session: Reader, computer: str) -> int:
    """The computer's generation, as a plain value."""
    value = session.scalar(_GENERATION, {"computer": computer})
    if value is None:
        raise NotFound(f"unknown computer {computer!r}")
    return value


def generations(session: Reader, computers: list[str]) -> dict[str, int]:
    """The generation of each of these computers that exists."""
    return {
        row.reference: row.generation
        for row in session.execute(_GENERATIONS, {"computers": computers})
    }


def partition_rows(session: Reader, computer: str) -> list[Row[Any]]:
    """`partitions_of` as plain rows, to be read only."""
    return list(session.execute(_PARTITION_ROWS, {"computer": computer}))


def software_of(session: Reader, computer: str) -> list[Row[Any]]:
    """(url, requested_state) of each release supplied to the computer."""
    return list(session.execute(_SOFTWARE_OF, {"computer": computer}))


def software_row(session: Session, computer: str, url: str) -> SoftwareRow | None:
    """The computer's installation of `url`, if it was ever supplied."""
    computer_row(session, computer)
    return session.scalar(_SOFTWARE, {"computer": computer, "url": url})


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
    values = {"computer": partition.computer, "reference": partition.reference}
    found = session.scalars(_BY_REQUESTER[row_type], values)
    return [row for row in found if row_type is SharedRow or row.slap_state == BUSY]


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
    return list(session.scalars(_TREE, {"root": root_title}))


def addresses(session: Reader, partition_ids: list[int]) -> dict[int, list[Row[Any]]]:
    """The addresses of each partition, as plain rows (interface, address, netmask …)."""
    grouped: dict[int, list[Row[Any]]] = defaultdict(list)
    if partition_ids:
        for address in session.execute(_ADDRESSES, {"ids": partition_ids}):
            grouped[address.partition_id].append(address)
    return grouped


def hosted(session: Reader, host_ids: list[int]) -> dict[int, list[Row[Any]]]:
    """The shared instances each host lists in its slave_instance_list, as plain rows."""
    grouped: dict[int, list[Row[Any]]] = defaultdict(list)
    if host_ids:
        for shared in session.execute(_HOSTED, {"ids": host_ids}):
            grouped[shared.host_id].append(shared)
    return grouped
