"""Computer-level writes: what `slapos format` declares and what users supply to a computer."""

from __future__ import annotations

from slapgrid.master import lookups
from slapgrid.master.inputs import ComputerFormat
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
    """`slapos format`'s computer: the computer, its partitions and their addresses."""
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
    for name, wanted in addresses_by_partition.items():
        row = existing.get(name)
        if row is None:
            row = PartitionRow(computer=reference, reference=name, timestamp=0)
            session.add(row)
            tx.touch(reference)
        if [a.key() for a in row.addresses] != wanted:
            row.addresses = [
                AddressRow(interface=i, address=a, netmask=m, gateway=g, network=n)
                for i, a, m, g, n in wanted
            ]
            if row.slap_state == BUSY:
                tx.bump(row)
            tx.touch(reference)
    return reference


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
