"""The embedded master's state: `MasterStore`, every state transition, one transaction each.

Semantics follow the reference proxy, with its bugs fixed:

* a partition's `timestamp` is an integer (µs) that strictly increases on every bump, and it is
  bumped whenever its node must re-process it: parameters, requested state, software release
  or type, the shared instances it hosts, connection parameters published by instances it
  requested, bangs of its tree, destroy propagation, address changes. Identical re-requests
  change nothing.
* every computer has a `generation`, bumped in the same transaction as any change to its
  getFullComputerInformation answer, so that answer can be cached and long-polled.

A `MasterStore` owns its database: its schema is brought up to date at open, and writes are
serialised in-process (and across processes: `database`). On SQLite the generations of
committed writes are kept in memory for cheap polling. A PostgreSQL database may be shared
(several workers, several masters): each write that moves generations notifies the others
(`notifications`), whose memory forgets them, and what an `ETag` says is read from it.
Each computer's last contact (its node's last fetch of its document) is stored too, written
in batches since nodes poll so often.
The tables live in `tables`; the transitions in `computers` (format, supply, usage),
`reports` (what nodes report), `partitions` (what instances change of their own partition)
and `instances` (requests); rendering in `answers`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, bindparam, case, func, select, update
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from slapgrid.master import (
    answers,
    computers,
    instances,
    lookups,
    notifications,
    partitions,
    reports,
    trees,
)
from slapgrid.master.database import (
    BUSY_TIMEOUT,
    READERS,
    Busy,
    create_sqlite,
    database_url,
    is_busy,
    make_engine,
    may_wait,
    unusable,
    upgrade,
)
from slapgrid.master.errors import BadRequest, Conflict, MasterError, NotFound
from slapgrid.master.inputs import (
    InstanceRequest,
    as_xml,
    check_request,
    check_supply,
    check_title,
    check_usage,
    dict_param,
    parse_format,
)
from slapgrid.master.stamps import http_date, now_us
from slapgrid.master.tables import (
    BUSY,
    DEFAULT_SOFTWARE_TYPE,
    BangRow,
    ComputerRow,
    UsageRow,
)
from slapgrid.master.transaction import Tx
from slapgrid.slap.documents import AVAILABLE, DESTROYED, Computer, ComputerPartition

T = TypeVar("T")
CONTACT_DELAY_US = 5_000_000  # how long a node's contact may wait to be written

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


_GENERATION = ComputerRow.__table__.c.generation
_BUMP = (
    update(ComputerRow.__table__)
    .where(ComputerRow.__table__.c.reference.in_(bindparam("computers", expanding=True)))
    .values(
        generation=case(
            (bindparam("now") < _GENERATION + 1, _GENERATION + 1), else_=bindparam("now")
        )
    )
    .returning(ComputerRow.__table__.c.reference, _GENERATION)
)
"""Each changed computer's generation moved past its last and to now (`next_stamp`), in
one statement."""
_BUMP_AND_NOTIFY = notifications.notifying(_BUMP)
_CONTACT = ComputerRow.__table__.c.last_contact
_NOTE_CONTACT = (
    update(ComputerRow.__table__)
    .where(ComputerRow.__table__.c.reference == bindparam("computer"))
    .values(
        last_contact=case(
            (func.coalesce(_CONTACT, 0) < bindparam("at"), bindparam("at")), else_=_CONTACT
        )
    )
)
"""A contact, unless a later one is stored: workers sharing a database write theirs in
any order."""


class MasterStore:
    """Every read and state transition of the master, each in one transaction."""

    def __init__(
        self,
        database: str | Path,
        *,
        default_computer: str | None = None,
        busy_timeout: float = BUSY_TIMEOUT,
        create: bool = True,
        readers: int = READERS,
    ) -> None:
        self.url = database_url(database)
        self.default_computer = default_computer
        self.busy_timeout = busy_timeout
        self.shared = self.url.startswith("postgresql")
        """Other processes may write the database: memory holds this store's commits and
        forgets what they notify; what an `ETag` says is read from the database."""
        self.sender = notifications.new_sender()
        """What this store's notifications are signed with (`notifications.Listener`)."""
        self._lock = threading.Lock()
        self._generations: dict[str, int] = {}
        self._generations_lock = threading.Lock()  # never held across a query
        self._epoch = 0  # moved by `forget`: a value read before it may be stale
        self._contacts_lock = threading.Lock()  # never held across a query
        self._contacts: dict[str, int] = {}  # contacts noted and not written yet
        self._contacts_since: int | None = None  # when the oldest of them was noted
        self._listeners: list[Callable[[dict[str, int]], None]] = []
        if self.url.startswith("sqlite:///") and self.url != "sqlite:///:memory:":
            path = Path(self.url.split("///", 1)[-1])
            if not create and not path.is_file():
                raise MasterError(f"no master database at {path}")
            create_sqlite(path)
        try:
            self._reader = make_engine(self.url, busy_timeout, immediate=False, readers=readers)
            self._writer = make_engine(self.url, busy_timeout, immediate=True)
            with self._lock:
                upgrade(self._writer, create=create)
        except SQLAlchemyError as exc:
            raise unusable(self.url, exc) from None
        if default_computer:
            self.ensure_computer(default_computer)

    def close(self) -> None:
        self.write_contacts()
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
    def _read_rows(self, *, single: bool = False) -> Iterator[Connection]:
        """A read of plain rows only (`lookups.Reader`): no ORM session to set up, which
        costs more than the frequent reads themselves (a document, a generation).

        A `single` statement needs no snapshot: on PostgreSQL it runs without the round
        trips of BEGIN and COMMIT."""
        with self._reader.connect() as connection:
            if single and self.shared:
                yield connection.execution_options(isolation_level="AUTOCOMMIT")
                return
            with connection.begin():
                yield connection

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """This process's write lock, waited for unless `database.never_waiting`."""
        if not self._lock.acquire(blocking=may_wait()):
            raise Busy("another write of this master is in progress")
        try:
            yield
        except OperationalError as exc:
            if not may_wait() and is_busy(exc):
                raise Busy("another process is writing the database") from None
            raise
        finally:
            self._lock.release()

    @contextmanager
    def _write(self) -> Iterator[Tx]:
        with self._writing():
            with Session(self._writer, expire_on_commit=False) as session, session.begin():
                session.connection()  # BEGIN now: `Busy` before any of the caller's work
                tx = Tx(session)
                yield tx
                changed: dict[str, int] = {}
                if tx.dirty:
                    session.flush()
                    bump, parameters = _BUMP, {"now": now_us(), "computers": list(tx.dirty)}
                    if self.shared:  # the other masters told in the same statement
                        bump = _BUMP_AND_NOTIFY
                        parameters["payloads"] = notifications.payloads(self.sender, tx.dirty)
                    bumped = session.execute(bump, parameters)
                    changed = {computer: generation for computer, generation in bumped}
                epoch = self._epoch  # before the commit: what is heard after may be newer
            self._remember(changed, epoch, committed=True)
        if changed:
            for callback in self._listeners:
                callback(changed)

    def read_with(self, work: Callable[[Session], T]) -> T:
        """`work(session)` in one read transaction (credentials decide in `credentials`)."""
        with self._read() as session:
            return work(session)

    def write_with(self, work: Callable[[Session], T]) -> T:
        """`work(session)` in one serialised write transaction, committed if it returns."""
        with self._write() as tx:
            return work(tx.session)

    # --- generations ---------------------------------------------------------------------

    def generation(self, computer: str, *, fresh: bool = False) -> int:
        """The computer's current generation (`NotFound` if unknown): from memory when known,
        from the database when `fresh` and the database is `shared` (what an `ETag` says)."""
        if not (fresh and self.shared):
            value = self._generations.get(computer)
            if value is not None:
                return value
        value = self.generations([computer]).get(computer)
        if value is None:
            raise NotFound(f"unknown computer {computer!r}")
        return value

    def generations(self, computers: list[str]) -> dict[str, int]:
        """The database's generation of each of these computers (the unknown ones left out),
        in one read; then held in memory.

        On a shared database memory is what the notifications keep: a value read is kept
        only if no notification came meanwhile (`forget`), so none outlives a change.
        """
        epoch = self._epoch
        with self._read_rows(single=True) as connection:
            values = lookups.generations(connection, computers)
        self._remember(values, epoch)
        return values

    def _remember(self, values: dict[str, int], epoch: int, *, committed: bool = False) -> None:
        """Hold `values`, read or `committed` when `epoch` was current, unless a change was
        heard of since (`forget`): they may be older than it. A commit's values are the
        newest; a read's do not replace a commit's made meanwhile."""
        with self._generations_lock:
            if epoch != self._epoch:
                for computer in values:
                    self._generations.pop(computer, None)
            elif committed:
                self._generations.update(values)
            else:
                for computer, value in values.items():
                    self._generations.setdefault(computer, value)

    def known_generation(self, computer: str) -> int | None:
        """The generation held in memory, without touching the database."""
        return self._generations.get(computer)

    def forget(self, computers: Iterable[str] | None = None) -> None:
        """These computers' (None: every) generations moved elsewhere: read them again."""
        with self._generations_lock:
            self._epoch += 1
            if computers is None:
                self._generations.clear()
            for computer in computers or ():
                self._generations.pop(computer, None)

    # --- computer-level writes -----------------------------------------------------------

    def ensure_computer(self, reference: str) -> None:
        with self._write() as tx:
            computers.ensure(tx, reference)

    def load_computer_configuration(self, definition: Any) -> str:
        """`slapos format`'s computer dict: computer, partitions and their addresses."""
        computer_format = parse_format(definition)
        with self._write() as tx:
            return computers.load_configuration(tx, computer_format)

    def supply(self, computer: str, url: str, state: str = AVAILABLE) -> None:
        check_supply(url, state)
        with self._write() as tx:
            computers.supply(tx, computer, url, state)

    def report_software(self, computer: str, url: str, event: str, log: str = "") -> None:
        """building / available / error / destroyed, as reported by the node."""
        with self._write() as tx:
            reports.software(tx, computer, url, event)

    def use_computer(self, computer: str, document: str) -> None:
        """Store a TioXML usage journal after validating it."""
        check_usage(document)
        with self._write() as tx:
            computers.use(tx, computer, document)

    def computer_bang(self, computer: str, message: str) -> None:
        """Record the bang and make the node re-process every instance it hosts."""
        with self._write() as tx:
            reports.computer_bang(tx, computer, message)

    # --- last contacts -------------------------------------------------------------------

    def note_contact(self, computer: str, at: int) -> bool:
        """The computer's node fetched its document at `at` (µs); its answer is unchanged.

        Nodes poll far too often for one write each: noted contacts are written together
        once the oldest is `CONTACT_DELAY_US` old (True: call `write_contacts` now), before
        any read of them, and at close.
        """
        with self._contacts_lock:
            self._contacts[computer] = at
            if self._contacts_since is None:
                self._contacts_since = at
            return at - self._contacts_since >= CONTACT_DELAY_US

    def write_contacts(self) -> None:
        if not self._contacts:
            return
        with self._writing(), self._writer.begin() as connection:
            with self._contacts_lock:  # taken once the write began: `Busy` loses none
                noted, self._contacts, self._contacts_since = self._contacts, {}, None
            rows = [{"computer": c, "at": at} for c, at in noted.items()]
            if rows:
                connection.execute(_NOTE_CONTACT, rows)

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
        with self._write() as tx:
            reports.partition(tx, computer, partition, event, log, slave_reference)

    def bang(self, computer: str, partition: str, message: str) -> None:
        """Make the node(s) re-process the whole instance tree of this partition."""
        with self._write() as tx:
            reports.bang(tx, computer, partition, message)

    def rename(
        self, computer: str, partition: str, new_name: str, slave_reference: str | None = None
    ) -> None:
        check_title(new_name, "new name")
        with self._write() as tx:
            partitions.rename(tx, computer, partition, new_name, slave_reference)

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
            partitions.set_connection(tx, computer, partition, document, slave_reference)

    def destroyed_partition(self, computer: str, partition: str) -> str:
        """The node wiped the partition: free it, unless instances it requested remain."""
        with self._write() as tx:
            return partitions.destroyed(tx, computer, partition)

    def request(self, request: InstanceRequest) -> dict[str, Any]:
        """Allocate or update an instance; the answer is the SoftwareInstance attributes."""
        parameters, sla = check_request(request)
        with self._write() as tx:
            return instances.request(tx, request, parameters, sla, self.default_computer)

    # --- what nodes read -----------------------------------------------------------------

    def computer_document(self, computer: str) -> tuple[int, Computer]:
        """The getFullComputerInformation answer and the generation it reflects."""
        with self._read_rows() as connection:
            return answers.computer_document(connection, computer)

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
        """Without a CA (`credentials` has one): busy partitions get empty strings, as from
        the proxy."""
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

    def computer_status(self, computer: str) -> dict[str, Any]:
        """The stored status, or `#access` at the node's last contact if that is newer."""
        self.write_contacts()
        with self._read() as session:
            row = lookups.computer_row(session, computer)
            status, reported_at = answers.status(row, computer, "Compute Node"), row.status_at
            last_contact = row.last_contact
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

    def instance_trees(self, owner: str | None = None) -> list[dict[str, Any]]:
        """Every instance a user (`owner`, else any) requested, with its parameters."""
        with self._read() as session:
            return trees.tree_list(session, owner)

    def instance_tree(self, title: str, owner: str | None = None) -> dict[str, Any]:
        with self._read() as session:
            return trees.tree_document(session, title, owner)

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
