"""What nodes report: software and instance statuses, and bangs that ask for re-processing."""

from __future__ import annotations

from sqlalchemy import select

from slapgrid.master import lookups
from slapgrid.master.errors import Conflict
from slapgrid.master.stamps import now_us
from slapgrid.master.tables import BUSY, BangRow, PartitionRow, Reported
from slapgrid.master.transaction import Tx
from slapgrid.slap.documents import DESTROYED

TEXT_LIMIT = 20_000
"""Characters of a node's error log or bang message kept: the end, where the cause is."""


def bounded(text: str) -> str:
    return text if len(text) <= TEXT_LIMIT else "..." + text[-TEXT_LIMIT:]


def set_status(row: Reported, text: str) -> bool:
    """Record a reported status; True if its text changed."""
    now = now_us()
    changed = row.status_text != text
    if changed:
        row.status_text, row.status_since = text, now
    row.status_at = now
    return changed


def software(tx: Tx, computer: str, url: str, event: str) -> None:
    """building / available / error / destroyed, as reported by the node."""
    row = lookups.supplied_row(tx.session, computer, url)
    if event == "destroyed":
        if row.requested_state != DESTROYED:
            raise Conflict(f"software release {url!r} is not to be destroyed")
        tx.session.delete(row)
        tx.touch(computer)
        return
    texts = {
        "building": f"#building software release {url}",
        "available": f"#access software release {url} available",
        "error": f"#error while installing {url}",
    }
    set_status(row, texts[event])


def partition(
    tx: Tx, computer: str, partition: str, event: str, log: str, slave_reference: str | None
) -> None:
    """started / stopped / error of an instance (or error of a shared one it hosts)."""
    texts = {
        "started": "#access Instance correctly started",
        "stopped": "#access Instance correctly stopped",
        "error": f"#error while instanciating: {bounded(log)}",
    }
    row = lookups.busy_row(tx.session, computer, partition)
    if slave_reference:
        shared = lookups.hosted_shared_row(tx.session, row, slave_reference)
        set_status(shared, texts[event])
    elif set_status(row, texts[event]):
        tx.touch(computer)


def computer_bang(tx: Tx, computer: str, message: str) -> None:
    """Record the bang and make the node re-process every instance it hosts."""
    row = lookups.computer_row(tx.session, computer)
    message = bounded(message)
    tx.session.add(BangRow(computer=computer, message=message, received_at=now_us()))
    set_status(row, f"#error bang: {message}")
    query = select(PartitionRow).where(
        PartitionRow.computer == computer, PartitionRow.slap_state == BUSY
    )
    for member in tx.session.scalars(query):
        tx.bump(member)


def bang(tx: Tx, computer: str, partition: str, message: str) -> None:
    """Make the node(s) re-process the whole instance tree of this partition."""
    row = lookups.busy_row(tx.session, computer, partition)
    set_status(row, f"#error bang called: {bounded(message)}")
    for member in lookups.tree(tx.session, row.root_title):
        tx.bump(member)
