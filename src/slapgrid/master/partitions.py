"""What instances change of their own partition: its name, its published connection, its end."""

from __future__ import annotations

from sqlalchemy import select

from slapgrid.master import instances, lookups
from slapgrid.master.errors import Conflict
from slapgrid.master.tables import FREE, PartitionRow, SharedRow
from slapgrid.master.transaction import Tx
from slapgrid.slap.documents import DESTROYED


def rename(
    tx: Tx, computer: str, partition: str, new_name: str, slave_reference: str | None
) -> None:
    session = tx.session
    row = lookups.busy_row(session, computer, partition)
    if slave_reference:  # a shared instance this partition hosts, as for its other calls
        instances.rename_shared(
            tx, lookups.hosted_shared_row(session, row, slave_reference), new_name
        )
        return
    if row.title == new_name:
        return
    if lookups.title_taken(session, PartitionRow, new_name, row.requested_by):
        raise Conflict(f"an instance named {new_name!r} already exists in this tree")
    old_title, is_root = row.title or "", not row.requested_by
    row.title = new_name
    tx.bump(row)
    if is_root:
        for member in lookups.tree(session, old_title):
            member.requested_by = new_name
            tx.bump(member)
        query = select(SharedRow).where(SharedRow.requested_by == old_title)
        for shared in session.scalars(query):
            shared.requested_by = new_name


def set_connection(
    tx: Tx, computer: str, partition: str, document: str, slave_reference: str | None
) -> None:
    """Publish connection parameters; the direct requester is bumped to pick them up."""
    row = lookups.busy_row(tx.session, computer, partition)
    target: PartitionRow | SharedRow = row
    if slave_reference:
        target = lookups.hosted_shared_row(tx.session, row, slave_reference)
    if target.connection == document:
        return
    target.connection = document
    if target is row:
        tx.touch(computer)
    instances.bump_requester(tx, target)


def destroyed(tx: Tx, computer: str, partition: str) -> str:
    """The node wiped the partition: free it, unless instances it requested remain."""
    session = tx.session
    row = lookups.partition_row(session, computer, partition)
    if row.slap_state == FREE:
        return "OK"
    if row.requested_state != DESTROYED:
        raise Conflict(f"partition {partition!r} on {computer!r} is not to be destroyed")
    remaining = lookups.descendants(session, row)
    if remaining:
        instances.mark_destroyed(tx, remaining)
        titles = ", ".join(sorted(child.title or "" for child in remaining))
        return f"Not destroying yet because this partition has child partitions: {titles}"
    for shared in lookups.by_requester(session, SharedRow, row):
        instances.drop_shared(tx, shared)
    for shared in session.scalars(select(SharedRow).where(SharedRow.host_id == row.id)):
        shared.host_id = None  # re-hosted when requested again: tell its requester
        instances.bump_requester(tx, shared)
    for row_type in (PartitionRow, SharedRow):
        for linked in lookups.by_requester(session, row_type, row):
            linked.requester_computer = linked.requester_partition = None
    _free(row)
    tx.bump(row)
    return "OK"


def _free(row: PartitionRow) -> None:
    row.slap_state, row.guid, row.title, row.requested_by = FREE, None, None, ""
    row.owner = None
    row.requester_computer = row.requester_partition = None
    row.software_release = row.software_type = None
    row.parameters = row.filter = row.connection = None
    row.requested_state = DESTROYED
    row.status_text = row.status_since = row.status_at = None
