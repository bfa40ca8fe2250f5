"""The embedded master's state: `MasterStore`, every state transition, one transaction each.

Semantics follow the reference proxy, with its bugs fixed:

* a partition's `timestamp` is an integer (µs) that strictly increases on every bump, and it is
  bumped whenever its node must re-process it: parameters, requested state, software release
  or type, the shared instances it hosts, connection parameters published by instances it
  requested, bangs of its tree, destroy propagation, address changes. Identical re-requests
  change nothing.
* every computer has a `generation`, bumped in the same transaction as any change to its
  getFullComputerInformation answer, so that answer can be cached and long-polled.

A `MasterStore` owns its database: writes are serialised in-process (plus `BEGIN IMMEDIATE`
on SQLite), and the generations of committed writes are kept in memory for cheap polling.
The tables live in `tables`, instance requests in `instances`, rendering in `answers`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from slapgrid.master import answers, instances, lookups
from slapgrid.master.database import database_url, init_schema, make_engine
from slapgrid.master.errors import BadRequest, Conflict, MasterError, NotFound
from slapgrid.master.inputs import (
    InstanceRequest,
    as_xml,
    check_request,
    check_supply,
    check_usage,
    dict_param,
    parse_format,
)
from slapgrid.master.stamps import Tx, http_date, next_stamp, now_us
from slapgrid.master.tables import (
    BUSY,
    DEFAULT_SOFTWARE_TYPE,
    FREE,
    AddressRow,
    BangRow,
    ComputerRow,
    PartitionRow,
    Reported,
    SharedRow,
    SoftwareRow,
    UsageRow,
)
from slapgrid.slap.documents import (
    AVAILABLE,
    DESTROYED,
    Computer,
    ComputerPartition,
)

__all__ = [  # what the app, the server, the CLI and tests import from here
    "DEFAULT_SOFTWARE_TYPE",
    "BadRequest",
    "Conflict",
    "InstanceRequest",
    "MasterError",
    "MasterStore",
    "NotFound",
    "database_url",
    "now_us",
]

_ERROR_TAIL = 80


class MasterStore:
    """Every read and state transition of the master, each in one transaction."""

    def __init__(
        self,
        database: str | Path,
        *,
        default_computer: str | None = None,
        busy_timeout: float = 30.0,
        create: bool = True,
    ) -> None:
        self.url = database_url(database)
        self.default_computer = default_computer
        self._lock = threading.Lock()
        self._generations: dict[str, int] = {}
        self._listeners: list[Callable[[dict[str, int]], None]] = []
        if self.url.startswith("sqlite") and not create:
            path = self.url.split("///", 1)[-1]
            if not Path(path).is_file():
                raise MasterError(f"no master database at {path}")
        try:
            self._reader = make_engine(self.url, busy_timeout, immediate=False)
            self._writer = make_engine(self.url, busy_timeout, immediate=True)
            with self._lock:
                init_schema(self._writer, create)
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            raise MasterError(f"cannot use database {self.url}: {reason}") from None
        if default_computer:
            self.ensure_computer(default_computer)

    def close(self) -> None:
        self._reader.dispose()
        self._writer.dispose()

    def add_listener(self, callback: Callable[[dict[str, int]], None]) -> None:
        """Call `callback({computer: generation})` after each commit that changed answers."""
        self._listeners.append(callback)

    # --- transactions --------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self._reader, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def _write(self) -> Iterator[Tx]:
        with self._lock:
            with Session(self._writer, expire_on_commit=False) as session, session.begin():
                tx = Tx(session)
                yield tx
                changed: dict[str, int] = {}
                if tx.dirty:
                    session.flush()
                    query = select(ComputerRow).where(ComputerRow.reference.in_(tx.dirty))
                    for row in session.scalars(query):
                        row.generation = next_stamp(row.generation)
                        changed[row.reference] = row.generation
            self._generations.update(changed)
        if changed:
            for callback in self._listeners:
                callback(changed)

    # --- generations ---------------------------------------------------------------------

    def generation(self, computer: str) -> int:
        """The computer's current generation (memory first; `NotFound` if unknown)."""
        value = self._generations.get(computer)
        if value is None:
            with self._read() as session:
                value = lookups.computer_row(session, computer).generation
            self._generations.setdefault(computer, value)
        return value

    def computer_ids(self) -> list[str]:
        with self._read() as session:
            return list(
                session.scalars(select(ComputerRow.reference).order_by(ComputerRow.reference))
            )

    def known_generation(self, computer: str) -> int | None:
        """The generation held in memory, without touching the database."""
        return self._generations.get(computer)

    # --- computer-level writes -----------------------------------------------------------

    def ensure_computer(self, reference: str) -> None:
        with self._write() as tx:
            _computer(tx, reference)

    def load_computer_configuration(self, definition: Any) -> str:
        """`slapos format`'s computer dict: computer, partitions and their addresses."""
        reference, addresses_by_partition, address, netmask = parse_format(definition)
        with self._write() as tx:
            session = tx.session
            computer = _computer(tx, reference)
            if (computer.address, computer.netmask) != (address, netmask):
                computer.address, computer.netmask = address, netmask
                tx.touch(reference)
            existing = {
                row.reference: row
                for row in session.scalars(
                    select(PartitionRow).where(PartitionRow.computer == reference)
                )
            }
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

    def supply(self, computer: str, url: str, state: str = AVAILABLE) -> None:
        check_supply(url, state)
        with self._write() as tx:
            row = lookups.software_row(tx.session, computer, url)
            if row is None:
                tx.session.add(SoftwareRow(computer=computer, url=url, requested_state=state))
                tx.touch(computer)
            elif row.requested_state != state:
                row.requested_state = state
                tx.touch(computer)

    def report_software(self, computer: str, url: str, event: str, log: str = "") -> None:
        """building / available / error / destroyed, as reported by the node."""
        with self._write() as tx:
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
            _set_status(row, texts[event])

    def use_computer(self, computer: str, document: str) -> None:
        """Store a TioXML usage journal after validating it."""
        check_usage(document)
        with self._write() as tx:
            lookups.computer_row(tx.session, computer)
            tx.session.add(UsageRow(computer=computer, document=document, received_at=now_us()))

    def computer_bang(self, computer: str, message: str) -> None:
        """Record the bang and make the node re-process every instance it hosts."""
        with self._write() as tx:
            row = lookups.computer_row(tx.session, computer)
            tx.session.add(BangRow(computer=computer, message=message, received_at=now_us()))
            _set_status(row, f"#error bang: {message}")
            query = select(PartitionRow).where(
                PartitionRow.computer == computer, PartitionRow.slap_state == BUSY
            )
            for partition in tx.session.scalars(query):
                tx.bump(partition)

    # --- partition-level writes ----------------------------------------------------------

    def report_partition(
        self,
        computer: str,
        partition: str,
        event: str,
        log: str = "",
        slave_reference: str | None = None,
    ) -> None:
        """started / stopped / error of an instance (or error of a shared one it hosts)."""
        texts = {
            "started": "#access Instance correctly started",
            "stopped": "#access Instance correctly stopped",
            "error": f"#error while instanciating: {log[-_ERROR_TAIL:]}",
        }
        with self._write() as tx:
            row = lookups.busy_row(tx.session, computer, partition)
            if slave_reference:
                shared = lookups.hosted_shared_row(tx.session, row, slave_reference)
                _set_status(shared, texts[event])
            elif _set_status(row, texts[event]):
                tx.touch(computer)

    def bang(self, computer: str, partition: str, message: str) -> None:
        """Make the node(s) re-process the whole instance tree of this partition."""
        with self._write() as tx:
            row = lookups.busy_row(tx.session, computer, partition)
            _set_status(row, f"#error bang called: {message}")
            for member in lookups.tree(tx.session, row.root_title):
                tx.bump(member)

    def rename(
        self, computer: str, partition: str, new_name: str, slave_reference: str | None = None
    ) -> None:
        if not new_name:
            raise BadRequest("new name is empty")
        with self._write() as tx:
            session = tx.session
            row = lookups.busy_row(session, computer, partition)
            if slave_reference:
                instances.rename_shared(tx, lookups.shared_row(session, slave_reference), new_name)
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
        self,
        computer: str,
        partition: str,
        parameters: Any,
        slave_reference: str | None = None,
    ) -> None:
        """Publish connection parameters; the direct requester is bumped to pick them up."""
        document = as_xml(dict_param(parameters, "connection parameters"), "connection")
        with self._write() as tx:
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

    def destroyed_partition(self, computer: str, partition: str) -> str:
        """The node wiped the partition: free it, unless instances it requested remain."""
        with self._write() as tx:
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

    def request(self, request: InstanceRequest) -> dict[str, Any]:
        """Allocate or update an instance; the answer is the SoftwareInstance attributes."""
        parameters, sla = check_request(request)
        with self._write() as tx:
            return instances.request(tx, request, parameters, sla, self.default_computer)

    # --- what nodes read -----------------------------------------------------------------

    def computer_document(self, computer: str) -> tuple[int, Computer]:
        """The getFullComputerInformation answer and the generation it reflects."""
        with self._read() as session:
            return answers.computer_document(session, computer)

    def partition_document(self, computer: str, partition: str) -> ComputerPartition:
        """registerComputerPartition: one partition, marked synced when busy."""
        with self._read() as session:
            row = lookups.partition_row(session, computer, partition)
            addresses = lookups.addresses(session, [row.id])[row.id]
            hosted = lookups.hosted(session, [row.id])[row.id]
            document = answers.partition_document(row, addresses, hosted)
            if row.slap_state == BUSY:
                document.synced = True
            return document

    def partition_certificate(self, computer: str, partition: str) -> dict[str, str]:
        """No certificate authority here: busy partitions get empty strings, as from the proxy."""
        self.check_partition(computer, partition)
        return {"certificate": "", "key": ""}

    def check_partition(self, computer: str, partition: str) -> None:
        with self._read() as session:
            lookups.busy_row(session, computer, partition)

    def hosting_ip_list(self, computer: str, partition: str) -> list[tuple[str, str]]:
        """(interface, address) of every partition of this partition's instance tree."""
        with self._read() as session:
            row = lookups.busy_row(session, computer, partition)
            if row.requested_state == DESTROYED:
                return []
            tree = lookups.tree(session, row.root_title)
            addresses = lookups.addresses(session, [member.id for member in tree])
            return [pair for member in tree for pair in answers.ip_lists(addresses[member.id])[0]]

    # --- what users read -----------------------------------------------------------------

    def partition_status(self, computer: str, partition: str) -> dict[str, Any]:
        with self._read() as session:
            row = lookups.partition_row(session, computer, partition)
            reference = row.guid or f"{computer}-{partition}"
            return answers.status(row, reference, "Software Instance")

    def computer_status(self, computer: str, last_contact: int | None = None) -> dict[str, Any]:
        """The stored status, or `#access` at the node's last contact if that is newer."""
        with self._read() as session:
            row = lookups.computer_row(session, computer)
            status, reported_at = answers.status(row, computer, "Compute Node"), row.status_at
        if last_contact and last_contact > (reported_at or 0):
            contact = http_date(last_contact)
            status.update(created_at=contact, since=contact, text=f"#access {computer}")
            status.update(no_data_since_5_minutes=0, no_data_since_15_minutes=0)
            status.pop("no_data", None)
        return status

    def software_status(self, computer: str, url: str) -> dict[str, Any]:
        with self._read() as session:
            row = lookups.supplied_row(session, computer, url)
            return answers.status(row, url, "Software Installation")

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        """Everything `slapgrid master show` prints, as plain data."""
        with self._read() as session:
            return answers.snapshot(session)

    def usage_reports(self, computer: str) -> list[str]:
        with self._read() as session:
            query = select(UsageRow.document).where(UsageRow.computer == computer)
            return list(session.scalars(query.order_by(UsageRow.id)))

    def computer_bangs(self, computer: str) -> list[str]:
        with self._read() as session:
            query = select(BangRow.message).where(BangRow.computer == computer)
            return list(session.scalars(query.order_by(BangRow.id)))


def _computer(tx: Tx, reference: str) -> ComputerRow:
    """The computer, created (and its answer marked changed) when it does not exist yet."""
    row = tx.session.get(ComputerRow, reference)
    if row is None:
        row = ComputerRow(reference=reference, generation=next_stamp(0))
        tx.session.add(row)
        tx.touch(reference)
    return row


def _set_status(row: Reported, text: str) -> bool:
    """Record a reported status; True if its text changed."""
    now = now_us()
    changed = row.status_text != text
    if changed:
        row.status_text, row.status_since = text, now
    row.status_at = now
    return changed


def _free(row: PartitionRow) -> None:
    row.slap_state, row.guid, row.title, row.requested_by = FREE, None, None, ""
    row.requester_computer = row.requester_partition = None
    row.software_release = row.software_type = None
    row.parameters = row.filter = row.connection = None
    row.requested_state = DESTROYED
    row.status_text = row.status_since = row.status_at = None
