"""Computer-level writes: what `slapos format` declares and what users supply to a computer."""

from __future__ import annotations

from sqlalchemy import delete, insert, select

from slapgrid.master import lookups
from slapgrid.master.inputs import AddressKey, ComputerFormat
from slapgrid.master.stamps import next_stamp, now_us
from slapgrid.master.tables import (
    BUSY,
    FREE,
    AddressRow,
    ComputerRow,
    PartitionRow,
    SoftwareRow,
    UsageRow,
)
from slapgrid.master.transaction import Tx


def ensure(tx: Tx, reference: str) -> ComputerRow:
    """The computer, created (and its answer marked changed) when it does not exist yet."""
    row = tx.session.get(ComputerRow, reference)
    if row is None:
        row = ComputerRow(reference=reference, generation=next_stamp(0))
        tx.session.add(row)
        tx.touch(reference)
    return row


def load_configuration(tx: Tx, computer_format: ComputerFormat) -> str:
    """`slapos format`'s computer: the computer, its partitions and their addresses.

    A fleet registers thousands of computers: new partitions and changed addresses are
    written in bulk, a few statements whatever the number of partitions.
    """
    reference, addresses_by_partition, address, netmask = computer_format
    session = tx.session
    computer = ensure(tx, reference)
    if (computer.address, computer.netmask) != (address, netmask):
        computer.address, computer.netmask = address, netmask
        tx.touch(reference)
    existing = {row.reference: row for row in lookups.partitions_of(session, reference)}
    for name, row in existing.items():
        if name not in addresses_by_partition and row.slap_state == FREE:
            session.delete(row)
            tx.touch(reference)
    stored = lookups.addresses(session, [row.id for row in existing.values()])
    ids = {name: row.id for name, row in existing.items()} | _add_partitions(
        tx, reference, [name for name in addresses_by_partition if name not in existing]
    )
    replaced: dict[int, list[AddressKey]] = {}
    for name, wanted in addresses_by_partition.items():
        keys = [
            (a.interface, a.address, a.netmask, a.gateway, a.network) for a in stored[ids[name]]
        ]
        if keys != wanted:
            replaced[ids[name]] = wanted
            row = existing.get(name)
            if row is not None and row.slap_state == BUSY:
                tx.bump(row)
            tx.touch(reference)
    stale = [partition_id for partition_id in replaced if stored.get(partition_id)]
    if stale:
        session.execute(delete(AddressRow).where(AddressRow.partition_id.in_(stale)))
    added = [
        {"partition_id": partition_id, "interface": i, "address": a}
        | {"netmask": m, "gateway": g, "network": n}
        for partition_id, wanted in replaced.items()
        for i, a, m, g, n in wanted
    ]
    if added:
        session.execute(insert(AddressRow.__table__), added)
    return reference


def _add_partitions(tx: Tx, computer: str, names: list[str]) -> dict[str, int]:
    """New free partitions of the computer, inserted together → their ids by name."""
    if not names:
        return {}
    rows = [{"computer": computer, "reference": name, "timestamp": 0} for name in names]
    tx.session.execute(insert(PartitionRow.__table__), rows)  # core: half the ORM's cost
    tx.touch(computer)
    query = select(PartitionRow.reference, PartitionRow.id).where(
        PartitionRow.computer == computer, PartitionRow.reference.in_(names)
    )
    return {name: partition_id for name, partition_id in tx.session.execute(query)}


def supply(tx: Tx, computer: str, url: str, state: str) -> None:
    row = lookups.software_row(tx.session, computer, url)
    if row is None:
        tx.session.add(SoftwareRow(computer=computer, url=url, requested_state=state))
        tx.touch(computer)
    elif row.requested_state != state:
        row.requested_state = state
        tx.touch(computer)


def use(tx: Tx, computer: str, document: str) -> None:
    """Store a usage journal (validated before the transaction)."""
    lookups.computer_row(tx.session, computer)
    tx.session.add(UsageRow(computer=computer, document=document, received_at=now_us()))
