"""The embedded master's state: SQL tables and every state transition, one transaction each.

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
"""

from __future__ import annotations

import email.utils
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from lxml import etree
from sqlalchemy import (
    BigInteger,
    ForeignKey,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    or_,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from slapgrid.errors import SlapgridError
from slapgrid.slap import instance_xml
from slapgrid.slap.documents import (
    AVAILABLE,
    DESTROYED,
    PARTITION_STATES,
    SOFTWARE_STATES,
    STARTED,
    STOPPED,
    Computer,
    ComputerPartition,
    SoftwareRelease,
)
from slapgrid.slap.errors import ProtocolError
from slapgrid.slap.marshal import parse_xml

SCHEMA_VERSION = "1"
DEFAULT_SOFTWARE_TYPE = "default"
FREE, BUSY = "free", "busy"
_STATE_STRENGTH = {STARTED: 0, STOPPED: 1, DESTROYED: 2}
_ERROR_TAIL = 80
_MINUTE_US = 60_000_000


# --- errors ------------------------------------------------------------------------------


class MasterError(SlapgridError):
    """A request the master refuses; `status` is the HTTP answer."""

    status = 400


class BadRequest(MasterError):
    status = 400


class NotFound(MasterError):
    status = 404


class Conflict(MasterError):
    status = 409


# --- time --------------------------------------------------------------------------------


def now_us() -> int:
    return time.time_ns() // 1000


def next_stamp(previous: int | None) -> int:
    """Now in µs, but always past `previous`: a bump must change the value."""
    return max(now_us(), (previous or 0) + 1)


def http_date(us: int) -> str:
    return email.utils.formatdate(us / 1e6, usegmt=True)


# --- tables ------------------------------------------------------------------------------


class Base(DeclarativeBase):
    pass


class MetaRow(Base):
    __tablename__ = "meta"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class ComputerRow(Base):
    __tablename__ = "computer"
    reference: Mapped[str] = mapped_column(String(255), primary_key=True)
    address: Mapped[str | None] = mapped_column(String(255))
    netmask: Mapped[str | None] = mapped_column(String(255))
    generation: Mapped[int] = mapped_column(BigInteger, default=0)
    status_text: Mapped[str | None] = mapped_column(Text)
    status_since: Mapped[int | None] = mapped_column(BigInteger)
    status_at: Mapped[int | None] = mapped_column(BigInteger)


class PartitionRow(Base):
    __tablename__ = "partition"
    __table_args__ = (
        UniqueConstraint("computer", "reference"),
        UniqueConstraint("title", "requested_by"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    computer: Mapped[str] = mapped_column(ForeignKey("computer.reference", ondelete="CASCADE"))
    reference: Mapped[str] = mapped_column(String(255))
    slap_state: Mapped[str] = mapped_column(String(16), default=FREE)
    guid: Mapped[str | None] = mapped_column(String(64), unique=True)
    title: Mapped[str | None] = mapped_column(String(255))
    requested_by: Mapped[str] = mapped_column(String(255), default="")  # root title, "" = root
    requester_computer: Mapped[str | None] = mapped_column(String(255))
    requester_partition: Mapped[str | None] = mapped_column(String(255))
    software_release: Mapped[str | None] = mapped_column(Text)
    software_type: Mapped[str | None] = mapped_column(String(255))
    parameters: Mapped[str | None] = mapped_column(Text)  # instance XML
    filter: Mapped[str | None] = mapped_column(Text)  # instance XML
    connection: Mapped[str | None] = mapped_column(Text)  # instance XML
    requested_state: Mapped[str] = mapped_column(String(16), default=DESTROYED)
    timestamp: Mapped[int] = mapped_column(BigInteger, default=0)
    status_text: Mapped[str | None] = mapped_column(Text)
    status_since: Mapped[int | None] = mapped_column(BigInteger)
    status_at: Mapped[int | None] = mapped_column(BigInteger)
    addresses: Mapped[list[AddressRow]] = relationship(
        cascade="all, delete-orphan", order_by="AddressRow.id"
    )

    @property
    def root_title(self) -> str:
        return self.requested_by or self.title or ""


class AddressRow(Base):
    """A partition address; one with a gateway is a routed tap address (`full_ip_list`)."""

    __tablename__ = "partition_address"
    id: Mapped[int] = mapped_column(primary_key=True)
    partition_id: Mapped[int] = mapped_column(ForeignKey("partition.id", ondelete="CASCADE"))
    interface: Mapped[str] = mapped_column(String(255))
    address: Mapped[str] = mapped_column(String(255))
    netmask: Mapped[str] = mapped_column(String(255), default="")
    gateway: Mapped[str] = mapped_column(String(255), default="")
    network: Mapped[str] = mapped_column(String(255), default="")

    def key(self) -> tuple[str, ...]:
        return (self.interface, self.address, self.netmask, self.gateway, self.network)


class SoftwareRow(Base):
    __tablename__ = "software_installation"
    __table_args__ = (UniqueConstraint("computer", "url"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    computer: Mapped[str] = mapped_column(ForeignKey("computer.reference", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    requested_state: Mapped[str] = mapped_column(String(16), default=AVAILABLE)
    status_text: Mapped[str | None] = mapped_column(Text)
    status_since: Mapped[int | None] = mapped_column(BigInteger)
    status_at: Mapped[int | None] = mapped_column(BigInteger)


class SharedRow(Base):
    """A shared ("slave") instance: hosted by a partition, listed in its slave_instance_list."""

    __tablename__ = "shared_instance"
    __table_args__ = (UniqueConstraint("title", "requested_by"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    guid: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(255))
    requested_by: Mapped[str] = mapped_column(String(255), default="")
    requester_computer: Mapped[str | None] = mapped_column(String(255))
    requester_partition: Mapped[str | None] = mapped_column(String(255))
    software_release: Mapped[str] = mapped_column(Text)
    software_type: Mapped[str] = mapped_column(String(255))
    parameters: Mapped[str] = mapped_column(Text)
    filter: Mapped[str] = mapped_column(Text)
    connection: Mapped[str | None] = mapped_column(Text)
    requested_state: Mapped[str] = mapped_column(String(16), default=STARTED)
    host_id: Mapped[int | None] = mapped_column(
        ForeignKey("partition.id", ondelete="SET NULL"), index=True
    )
    timestamp: Mapped[int] = mapped_column(BigInteger, default=0)
    status_text: Mapped[str | None] = mapped_column(Text)
    status_since: Mapped[int | None] = mapped_column(BigInteger)
    status_at: Mapped[int | None] = mapped_column(BigInteger)

    @property
    def listed(self) -> bool:
        return self.host_id is not None and self.requested_state == STARTED


class UsageRow(Base):
    __tablename__ = "usage_report"
    id: Mapped[int] = mapped_column(primary_key=True)
    computer: Mapped[str] = mapped_column(ForeignKey("computer.reference", ondelete="CASCADE"))
    document: Mapped[str] = mapped_column(Text)
    received_at: Mapped[int] = mapped_column(BigInteger)


class BangRow(Base):
    __tablename__ = "computer_bang"
    id: Mapped[int] = mapped_column(primary_key=True)
    computer: Mapped[str] = mapped_column(ForeignKey("computer.reference", ondelete="CASCADE"))
    message: Mapped[str] = mapped_column(Text)
    received_at: Mapped[int] = mapped_column(BigInteger)


# --- inputs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstanceRequest:
    """One requestComputerPartition call, already unmarshalled."""

    software_release: str
    title: str
    software_type: str = DEFAULT_SOFTWARE_TYPE
    parameters: Mapping[str, Any] = field(default_factory=dict)
    filter: Mapping[str, Any] = field(default_factory=dict)
    state: str | None = None
    shared: bool = False
    requester: tuple[str, str] | None = None  # (computer, partition) of a requesting instance


@dataclass
class _Tx:
    """A write in progress: which computers' answers changed."""

    session: Session
    dirty: set[str] = field(default_factory=set)

    def touch(self, computer: str) -> None:
        self.dirty.add(computer)

    def bump(self, partition: PartitionRow) -> None:
        partition.timestamp = next_stamp(partition.timestamp)
        self.dirty.add(partition.computer)


def database_url(database: str | Path) -> str:
    """A SQLAlchemy URL as is, or a file path made into a SQLite URL."""
    text = str(database)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def _set_status(row: Any, text: str) -> bool:
    """Record a reported status; True if its text changed."""
    now = now_us()
    changed = row.status_text != text
    if changed:
        row.status_text, row.status_since = text, now
    row.status_at = now
    return changed


def _stronger(state: str, other: str) -> str:
    return state if _STATE_STRENGTH[state] >= _STATE_STRENGTH[other] else other


def _dict_param(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise BadRequest(f"{what} must be a dictionary with string keys")
    return dict(value)


def _xml(parameters: Mapping[str, Any], what: str) -> str:
    try:
        return instance_xml.dumps(parameters)
    except ValueError as exc:  # characters XML cannot carry
        raise BadRequest(f"{what}: {exc}") from None


def _load_schema(name: str) -> etree.XMLSchema:
    text = resources.files("slapgrid.master").joinpath(name).read_bytes()
    return etree.XMLSchema(etree.fromstring(text))


_USAGE_SCHEMA = _load_schema("computer_consumption.xsd")


# --- the store ---------------------------------------------------------------------------


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
            self._reader = self._engine(busy_timeout, immediate=False)
            self._writer = self._engine(busy_timeout, immediate=True)
            self._init_schema(create)
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            raise MasterError(f"cannot use database {self.url}: {reason}") from None
        if default_computer:
            self.ensure_computer(default_computer)

    def _engine(self, busy_timeout: float, *, immediate: bool) -> Engine:
        if not self.url.startswith("sqlite"):
            return create_engine(self.url, pool_pre_ping=True)
        engine = create_engine(
            self.url,
            connect_args={"timeout": busy_timeout, "check_same_thread": False},
            pool_size=1 if immediate else 8,
            max_overflow=0 if immediate else 32,
        )

        @event.listens_for(engine, "connect")
        def _connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself, below
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    def _init_schema(self, create: bool) -> None:
        with self._lock:
            if create:
                Base.metadata.create_all(self._writer)
            with Session(self._writer) as session, session.begin():
                version = session.get(MetaRow, "schema_version")
                if version is None:
                    session.add(MetaRow(name="schema_version", value=SCHEMA_VERSION))
                elif version.value != SCHEMA_VERSION:
                    raise MasterError(
                        f"database schema version {version.value}, expected {SCHEMA_VERSION}"
                    )

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
    def _write(self) -> Iterator[_Tx]:
        with self._lock:
            with Session(self._writer, expire_on_commit=False) as session, session.begin():
                tx = _Tx(session)
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

    # --- lookups -------------------------------------------------------------------------

    @staticmethod
    def _computer(session: Session, reference: str) -> ComputerRow:
        row = session.get(ComputerRow, reference)
        if row is None:
            raise NotFound(f"unknown computer {reference!r}")
        return row

    def _partition(self, session: Session, computer: str, reference: str) -> PartitionRow:
        query = select(PartitionRow).where(
            PartitionRow.computer == computer, PartitionRow.reference == reference
        )
        row = session.scalar(query)
        if row is None:
            self._computer(session, computer)
            raise NotFound(f"unknown partition {reference!r} on computer {computer!r}")
        return row

    def _busy(self, session: Session, computer: str, reference: str) -> PartitionRow:
        row = self._partition(session, computer, reference)
        if row.slap_state != BUSY:
            raise NotFound(f"partition {reference!r} on computer {computer!r} hosts no instance")
        return row

    @staticmethod
    def _by_requester(session: Session, row_type: Any, partition: PartitionRow) -> list[Any]:
        query = select(row_type).where(
            row_type.requester_computer == partition.computer,
            row_type.requester_partition == partition.reference,
        )
        if row_type is PartitionRow:
            query = query.where(PartitionRow.slap_state == BUSY)
        return list(session.scalars(query.order_by(row_type.id)))

    def _descendants(self, session: Session, partition: PartitionRow) -> list[PartitionRow]:
        """Busy partitions requested, directly or not, by this one."""
        found: dict[int, PartitionRow] = {}
        pending = [partition]
        while pending:
            for child in self._by_requester(session, PartitionRow, pending.pop()):
                if child.id not in found and child.id != partition.id:
                    found[child.id] = child
                    pending.append(child)
        return list(found.values())

    @staticmethod
    def _bump_requester(tx: _Tx, instance: PartitionRow | SharedRow) -> None:
        """The partition that requested `instance` must re-read it."""
        if instance.requester_computer and instance.requester_partition:
            query = select(PartitionRow).where(
                PartitionRow.computer == instance.requester_computer,
                PartitionRow.reference == instance.requester_partition,
                PartitionRow.slap_state == BUSY,
            )
            requester = tx.session.scalar(query)
            if requester is not None:
                tx.bump(requester)

    @staticmethod
    def _tree(session: Session, root_title: str) -> list[PartitionRow]:
        query = select(PartitionRow).where(
            PartitionRow.slap_state == BUSY,
            or_(
                PartitionRow.requested_by == root_title,
                (PartitionRow.title == root_title) & (PartitionRow.requested_by == ""),
            ),
        )
        return list(session.scalars(query.order_by(PartitionRow.id)))

    @staticmethod
    def _shared(session: Session, guid: str) -> SharedRow:
        row = session.scalar(select(SharedRow).where(SharedRow.guid == guid))
        if row is None:
            raise NotFound(f"unknown shared instance {guid!r}")
        return row

    # --- generations ---------------------------------------------------------------------

    def generation(self, computer: str) -> int:
        """The computer's current generation (memory first; `NotFound` if unknown)."""
        value = self._generations.get(computer)
        if value is None:
            with self._read() as session:
                value = self._computer(session, computer).generation
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
            if tx.session.get(ComputerRow, reference) is None:
                tx.session.add(ComputerRow(reference=reference, generation=next_stamp(0)))
                tx.touch(reference)

    def load_computer_configuration(self, definition: Any) -> str:
        """`slapos format`'s computer dict: computer, partitions and their addresses."""
        reference, addresses_by_partition, address, netmask = _parse_format(definition)
        with self._write() as tx:
            session = tx.session
            computer = session.get(ComputerRow, reference)
            if computer is None:
                computer = ComputerRow(reference=reference, generation=next_stamp(0))
                session.add(computer)
                tx.touch(reference)
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
        if not url:
            raise BadRequest("software release URL is empty")
        if state not in SOFTWARE_STATES:
            raise BadRequest(f"supply state must be available or destroyed, not {state!r}")
        with self._write() as tx:
            self._computer(tx.session, computer)
            row = tx.session.scalar(
                select(SoftwareRow).where(SoftwareRow.computer == computer, SoftwareRow.url == url)
            )
            if row is None:
                tx.session.add(SoftwareRow(computer=computer, url=url, requested_state=state))
                tx.touch(computer)
            elif row.requested_state != state:
                row.requested_state = state
                tx.touch(computer)

    def report_software(self, computer: str, url: str, event: str, log: str = "") -> None:
        """building / available / error / destroyed, as reported by the node."""
        with self._write() as tx:
            self._computer(tx.session, computer)
            row = tx.session.scalar(
                select(SoftwareRow).where(SoftwareRow.computer == computer, SoftwareRow.url == url)
            )
            if row is None:
                raise NotFound(f"software release {url!r} is not supplied to {computer!r}")
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
        try:
            root = parse_xml(document, what="usage document")
        except ProtocolError as exc:
            raise BadRequest(str(exc)) from None
        if not _USAGE_SCHEMA.validate(root):
            error = _USAGE_SCHEMA.error_log.last_error
            raise BadRequest(f"usage document is invalid: {error.message if error else ''}")
        with self._write() as tx:
            self._computer(tx.session, computer)
            tx.session.add(UsageRow(computer=computer, document=document, received_at=now_us()))

    def computer_bang(self, computer: str, message: str) -> None:
        """Record the bang and make the node re-process every instance it hosts."""
        with self._write() as tx:
            row = self._computer(tx.session, computer)
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
            row = self._busy(tx.session, computer, partition)
            if slave_reference:
                shared = self._shared(tx.session, slave_reference)
                if shared.host_id != row.id:
                    raise NotFound(f"shared instance {slave_reference!r} is not hosted here")
                _set_status(shared, texts[event])
            elif _set_status(row, texts[event]):
                tx.touch(computer)

    def bang(self, computer: str, partition: str, message: str) -> None:
        """Make the node(s) re-process the whole instance tree of this partition."""
        with self._write() as tx:
            row = self._busy(tx.session, computer, partition)
            _set_status(row, f"#error bang called: {message}")
            for member in self._tree(tx.session, row.root_title):
                tx.bump(member)

    def rename(
        self, computer: str, partition: str, new_name: str, slave_reference: str | None = None
    ) -> None:
        if not new_name:
            raise BadRequest("new name is empty")
        with self._write() as tx:
            session = tx.session
            row = self._busy(session, computer, partition)
            if slave_reference:
                self._rename_shared(tx, self._shared(session, slave_reference), new_name)
                return
            if row.title == new_name:
                return
            clash = select(PartitionRow.id).where(
                PartitionRow.title == new_name, PartitionRow.requested_by == row.requested_by
            )
            if session.scalar(clash) is not None:
                raise Conflict(f"an instance named {new_name!r} already exists in this tree")
            old_title, is_root = row.title or "", not row.requested_by
            row.title = new_name
            tx.bump(row)
            if is_root:
                for member in self._tree(session, old_title):
                    member.requested_by = new_name
                    tx.bump(member)
                query = select(SharedRow).where(SharedRow.requested_by == old_title)
                for shared in session.scalars(query):
                    shared.requested_by = new_name

    def _rename_shared(self, tx: _Tx, shared: SharedRow, new_name: str) -> None:
        if shared.title == new_name:
            return
        clash = select(SharedRow.id).where(
            SharedRow.title == new_name, SharedRow.requested_by == shared.requested_by
        )
        if tx.session.scalar(clash) is not None:
            raise Conflict(f"a shared instance named {new_name!r} already exists in this tree")
        shared.title = new_name
        self._bump_shared(tx, shared, previous_host=shared.host_id, was_listed=shared.listed)

    def set_connection(
        self,
        computer: str,
        partition: str,
        parameters: Any,
        slave_reference: str | None = None,
    ) -> None:
        """Publish connection parameters; the direct requester is bumped to pick them up."""
        document = _xml(_dict_param(parameters, "connection parameters"), "connection")
        with self._write() as tx:
            row = self._busy(tx.session, computer, partition)
            target: PartitionRow | SharedRow = row
            if slave_reference:
                target = self._shared(tx.session, slave_reference)
                if target.host_id != row.id:
                    raise NotFound(f"shared instance {slave_reference!r} is not hosted here")
            if target.connection == document:
                return
            target.connection = document
            if target is row:
                tx.touch(computer)
            self._bump_requester(tx, target)

    def destroyed_partition(self, computer: str, partition: str) -> str:
        """The node wiped the partition: free it, unless instances it requested remain."""
        with self._write() as tx:
            session = tx.session
            row = self._partition(session, computer, partition)
            if row.slap_state == FREE:
                return "OK"
            if row.requested_state != DESTROYED:
                raise Conflict(f"partition {partition!r} on {computer!r} is not to be destroyed")
            remaining = self._descendants(session, row)
            if remaining:
                for child in remaining:
                    if child.requested_state != DESTROYED:
                        child.requested_state = DESTROYED
                        tx.bump(child)
                titles = ", ".join(sorted(child.title or "" for child in remaining))
                return f"Not destroying yet because this partition has child partitions: {titles}"
            for shared in self._by_requester(session, SharedRow, row):
                self._drop_shared(tx, shared)
            for shared in session.scalars(select(SharedRow).where(SharedRow.host_id == row.id)):
                shared.host_id = None  # re-hosted when requested again: tell its requester
                self._bump_requester(tx, shared)
            for row_type in (PartitionRow, SharedRow):
                for linked in self._by_requester(session, row_type, row):
                    linked.requester_computer = linked.requester_partition = None
            _free(row)
            tx.bump(row)
            return "OK"

    # --- requests ------------------------------------------------------------------------

    def request(self, request: InstanceRequest) -> dict[str, Any]:
        """Allocate or update an instance; the answer is the SoftwareInstance attributes."""
        if not request.software_release:
            raise BadRequest("software_release is empty")
        if not request.title:
            raise BadRequest("partition_reference is empty")
        if request.state is not None and request.state not in PARTITION_STATES:
            raise BadRequest(f"state must be started, stopped or destroyed, not {request.state!r}")
        parameters = _xml(_dict_param(request.parameters, "parameters"), "parameters")
        sla = _dict_param(request.filter, "filter")
        with self._write() as tx:
            root_title = ""
            requester: PartitionRow | None = None
            if request.requester is not None:
                requester = self._busy(tx.session, *request.requester)
                root_title = requester.root_title
            if request.shared:
                return self._request_shared(tx, request, parameters, sla, root_title, requester)
            return self._request_partition(tx, request, parameters, sla, root_title, requester)

    def _request_partition(
        self,
        tx: _Tx,
        request: InstanceRequest,
        parameters: str,
        sla: dict[str, Any],
        root_title: str,
        requester: PartitionRow | None,
    ) -> dict[str, Any]:
        session = tx.session
        state = request.state or STARTED
        if root_title:
            root = session.scalar(
                select(PartitionRow).where(
                    PartitionRow.title == root_title,
                    PartitionRow.requested_by == "",
                    PartitionRow.slap_state == BUSY,
                )
            )
            if root is not None:
                state = _stronger(state, root.requested_state)
        row = session.scalar(
            select(PartitionRow).where(
                PartitionRow.title == request.title,
                PartitionRow.requested_by == root_title,
                PartitionRow.slap_state == BUSY,
            )
        )
        if row is None:
            if state == DESTROYED:
                return _gone(request)
            row = self._allocate(session, sla.get("computer_guid"), request.title)
            row.slap_state, row.title, row.requested_by = BUSY, request.title, root_title
            row.guid = f"SOFTINST-{secrets.token_hex(6)}"
        wanted = {
            "software_release": request.software_release,
            "software_type": request.software_type or DEFAULT_SOFTWARE_TYPE,
            "parameters": parameters,
            "filter": _xml(sla, "filter"),
            "requested_state": state,
        }
        changed = {key: value for key, value in wanted.items() if getattr(row, key) != value}
        for key, value in changed.items():
            setattr(row, key, value)
        if requester is not None and (row.requester_computer, row.requester_partition) != (
            requester.computer,
            requester.reference,
        ):
            row.requester_computer, row.requester_partition = (
                requester.computer,
                requester.reference,
            )
        if changed:
            tx.bump(row)
        if changed.get("requested_state") == DESTROYED:
            for child in self._descendants(session, row):
                if child.requested_state != DESTROYED:
                    child.requested_state = DESTROYED
                    tx.bump(child)
        session.flush()
        return self._instance_answer(session, row)

    def _allocate(self, session: Session, computer: Any, title: str) -> PartitionRow:
        computer = computer or self.default_computer
        if not isinstance(computer, str) or not computer:
            raise BadRequest("no computer_guid in the filter and no default computer")
        self._computer(session, computer)
        row = session.scalar(
            select(PartitionRow)
            .where(PartitionRow.computer == computer, PartitionRow.slap_state == FREE)
            .order_by(PartitionRow.id)
            .limit(1)
        )
        if row is None:
            raise NotFound(f"no free partition on computer {computer!r} for {title!r}")
        return row

    def _request_shared(
        self,
        tx: _Tx,
        request: InstanceRequest,
        parameters: str,
        sla: dict[str, Any],
        root_title: str,
        requester: PartitionRow | None,
    ) -> dict[str, Any]:
        session = tx.session
        state = request.state or STARTED
        shared = session.scalar(
            select(SharedRow).where(
                SharedRow.title == request.title, SharedRow.requested_by == root_title
            )
        )
        if state == DESTROYED:
            if shared is None:
                return _gone(request)
            answer = self._shared_answer(session, shared)
            answer["_requested_state"] = DESTROYED
            self._drop_shared(tx, shared)
            return answer
        host = session.get(PartitionRow, shared.host_id) if shared and shared.host_id else None
        if host is None or not _can_host(host, request):
            host = self._find_host(session, request, sla)
        if shared is None:
            shared = SharedRow(
                guid=f"SHARED-{secrets.token_hex(6)}",
                title=request.title,
                requested_by=root_title,
                connection=None,
            )
            session.add(shared)
            previous_host, was_listed = None, False
        else:
            previous_host, was_listed = shared.host_id, shared.listed
        wanted = {
            "software_release": request.software_release,
            "software_type": request.software_type or DEFAULT_SOFTWARE_TYPE,
            "parameters": parameters,
            "filter": _xml(sla, "filter"),
            "requested_state": state,
            "host_id": host.id,
        }
        changed = {key: value for key, value in wanted.items() if getattr(shared, key) != value}
        for key, value in changed.items():
            setattr(shared, key, value)
        if requester is not None:
            shared.requester_computer = requester.computer
            shared.requester_partition = requester.reference
        if changed:
            self._bump_shared(tx, shared, previous_host, was_listed)
        session.flush()
        return self._shared_answer(session, shared)

    def _find_host(
        self, session: Session, request: InstanceRequest, sla: dict[str, Any]
    ) -> PartitionRow:
        computer = sla.get("computer_guid") or self.default_computer
        query = (
            select(PartitionRow)
            .where(
                PartitionRow.computer == computer,
                PartitionRow.slap_state == BUSY,
                PartitionRow.software_release == request.software_release,
                PartitionRow.requested_state != DESTROYED,
            )
            .order_by(PartitionRow.id)
        )
        if request.software_type:
            query = query.where(PartitionRow.software_type == request.software_type)
        wanted_guid = sla.get("instance_guid")
        for row in session.scalars(query):
            if wanted_guid in (None, row.guid, f"{row.computer}-{row.reference}"):
                return row
        raise NotFound(
            f"no partition on {computer!r} can host shared instance {request.title!r} "
            f"({request.software_release}, type {request.software_type!r})"
        )

    def _bump_shared(
        self, tx: _Tx, shared: SharedRow, previous_host: int | None, was_listed: bool
    ) -> None:
        """A shared instance changed: bump it, and the hosts whose listing changed."""
        shared.timestamp = next_stamp(shared.timestamp)
        hosts = set()
        if was_listed and previous_host is not None:
            hosts.add(previous_host)
        if shared.listed:
            hosts.add(shared.host_id)
        for host_id in hosts:
            host = tx.session.get(PartitionRow, host_id)
            if host is not None:
                tx.bump(host)

    def _drop_shared(self, tx: _Tx, shared: SharedRow) -> None:
        if shared.listed:
            host = tx.session.get(PartitionRow, shared.host_id)
            if host is not None:
                tx.bump(host)
        tx.session.delete(shared)

    # --- answers -------------------------------------------------------------------------

    @staticmethod
    def _addresses(session: Session, partition_ids: list[int]) -> dict[int, list[AddressRow]]:
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

    def _instance_answer(self, session: Session, row: PartitionRow) -> dict[str, Any]:
        ip_list, full_ip_list = _ip_lists(self._addresses(session, [row.id])[row.id])
        return {
            "_connection_dict": instance_xml.loads(row.connection),
            "_filter_dict": instance_xml.loads(row.filter),
            "_instance_guid": row.guid,
            "_parameter_dict": instance_xml.loads(row.parameters),
            "_requested_state": row.requested_state,
            "full_ip_list": full_ip_list,
            "instance_title": row.title,
            "ip_list": ip_list,
            "root_instance_title": row.root_title,
            "slap_computer_id": row.computer,
            "slap_computer_partition_id": row.reference,
            "slap_software_release_url": row.software_release,
            "slap_software_type": row.software_type,
            "timestamp": row.timestamp,
        }

    def _shared_answer(self, session: Session, shared: SharedRow) -> dict[str, Any]:
        host = session.get(PartitionRow, shared.host_id) if shared.host_id else None
        addresses = self._addresses(session, [host.id])[host.id] if host else []
        ip_list, full_ip_list = _ip_lists(addresses)
        return {
            "_connection_dict": instance_xml.loads(shared.connection),
            "_filter_dict": instance_xml.loads(shared.filter),
            "_instance_guid": shared.guid,
            "_parameter_dict": instance_xml.loads(shared.parameters),
            "_requested_state": shared.requested_state,
            "full_ip_list": full_ip_list,
            "instance_title": shared.title,
            "ip_list": ip_list,
            "root_instance_title": shared.requested_by or shared.title,
            "slap_computer_id": host.computer if host else None,
            "slap_computer_partition_id": host.reference if host else None,
            "slap_software_release_url": shared.software_release,
            "slap_software_type": shared.software_type,
            "timestamp": shared.timestamp,
        }

    def computer_document(self, computer: str) -> tuple[int, Computer]:
        """The getFullComputerInformation answer and the generation it reflects."""
        with self._read() as session:
            row = self._computer(session, computer)
            partitions = list(
                session.scalars(
                    select(PartitionRow)
                    .where(PartitionRow.computer == computer)
                    .order_by(PartitionRow.id)
                )
            )
            busy_ids = [p.id for p in partitions if p.slap_state == BUSY]
            addresses = self._addresses(session, busy_ids)
            shared = self._hosted(session, busy_ids)
            software = session.scalars(
                select(SoftwareRow).where(SoftwareRow.computer == computer).order_by(SoftwareRow.id)
            )
            document = Computer(
                computer_id=computer,
                partitions=[
                    _partition_document(p, addresses[p.id], shared[p.id]) for p in partitions
                ],
                software_releases=[
                    SoftwareRelease(s.url, computer, s.requested_state) for s in software
                ],
            )
            return row.generation, document

    @staticmethod
    def _hosted(session: Session, host_ids: list[int]) -> dict[int, list[SharedRow]]:
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

    def partition_document(self, computer: str, partition: str) -> ComputerPartition:
        """registerComputerPartition: one partition, marked synced when busy."""
        with self._read() as session:
            row = self._partition(session, computer, partition)
            addresses = self._addresses(session, [row.id])[row.id]
            document = _partition_document(row, addresses, self._hosted(session, [row.id])[row.id])
            if row.slap_state == BUSY:
                document.synced = True
            return document

    def partition_certificate(self, computer: str, partition: str) -> dict[str, str]:
        """No certificate authority here: busy partitions get empty strings, as from the proxy."""
        with self._read() as session:
            self._busy(session, computer, partition)
        return {"certificate": "", "key": ""}

    def check_partition(self, computer: str, partition: str) -> None:
        with self._read() as session:
            self._busy(session, computer, partition)

    def hosting_ip_list(self, computer: str, partition: str) -> list[tuple[str, str]]:
        """(interface, address) of every partition of this partition's instance tree."""
        with self._read() as session:
            row = self._busy(session, computer, partition)
            if row.requested_state == DESTROYED:
                return []
            tree = self._tree(session, row.root_title)
            addresses = self._addresses(session, [member.id for member in tree])
            return [pair for member in tree for pair in _ip_lists(addresses[member.id])[0]]

    # --- statuses ------------------------------------------------------------------------

    def partition_status(self, computer: str, partition: str) -> dict[str, Any]:
        with self._read() as session:
            row = self._partition(session, computer, partition)
            reference = row.guid or f"{computer}-{partition}"
            return _status(row, reference, "Software Instance")

    def computer_status(self, computer: str, last_contact: int | None = None) -> dict[str, Any]:
        """The stored status, or `#access` at the node's last contact if that is newer."""
        with self._read() as session:
            row = self._computer(session, computer)
            status, reported_at = _status(row, computer, "Compute Node"), row.status_at
        if last_contact and last_contact > (reported_at or 0):
            contact = http_date(last_contact)
            status.update(created_at=contact, since=contact, text=f"#access {computer}")
            status.update(no_data_since_5_minutes=0, no_data_since_15_minutes=0)
            status.pop("no_data", None)
        return status

    def software_status(self, computer: str, url: str) -> dict[str, Any]:
        with self._read() as session:
            self._computer(session, computer)
            row = session.scalar(
                select(SoftwareRow).where(SoftwareRow.computer == computer, SoftwareRow.url == url)
            )
            if row is None:
                raise NotFound(f"software release {url!r} is not supplied to {computer!r}")
            return _status(row, url, "Software Installation")

    # --- overview ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        """Everything `slapgrid master show` prints, as plain data."""
        with self._read() as session:
            computers = list(session.scalars(select(ComputerRow).order_by(ComputerRow.reference)))
            partitions = list(
                session.scalars(
                    select(PartitionRow).order_by(PartitionRow.computer, PartitionRow.id)
                )
            )
            software = list(
                session.scalars(select(SoftwareRow).order_by(SoftwareRow.computer, SoftwareRow.id))
            )
            shared = list(session.scalars(select(SharedRow).order_by(SharedRow.id)))
            hosts = {p.id: p for p in partitions}
            return {
                "computers": [
                    {
                        "reference": c.reference,
                        "address": c.address,
                        "generation": c.generation,
                        "partitions": sum(1 for p in partitions if p.computer == c.reference),
                        "status": c.status_text,
                    }
                    for c in computers
                ],
                "partitions": [
                    {
                        "computer": p.computer,
                        "partition": p.reference,
                        "slap_state": p.slap_state,
                        "title": p.title,
                        "root": p.root_title if p.slap_state == BUSY else None,
                        "requested_state": p.requested_state,
                        "software_release": p.software_release,
                        "software_type": p.software_type,
                        "timestamp": p.timestamp,
                        "status": p.status_text,
                        "parameters": instance_xml.loads(p.parameters),
                        "connection": instance_xml.loads(p.connection),
                    }
                    for p in partitions
                ],
                "software": [
                    {
                        "computer": s.computer,
                        "url": s.url,
                        "requested_state": s.requested_state,
                        "status": s.status_text,
                    }
                    for s in software
                ],
                "shared": [
                    {
                        "guid": s.guid,
                        "title": s.title,
                        "root": s.requested_by or s.title,
                        "requested_state": s.requested_state,
                        "software_release": s.software_release,
                        "software_type": s.software_type,
                        "host": (
                            f"{hosts[s.host_id].computer}/{hosts[s.host_id].reference}"
                            if s.host_id in hosts
                            else None
                        ),
                        "timestamp": s.timestamp,
                        "status": s.status_text,
                        "parameters": instance_xml.loads(s.parameters),
                        "connection": instance_xml.loads(s.connection),
                    }
                    for s in shared
                ],
            }

    def usage_reports(self, computer: str) -> list[str]:
        with self._read() as session:
            query = select(UsageRow.document).where(UsageRow.computer == computer)
            return list(session.scalars(query.order_by(UsageRow.id)))

    def computer_bangs(self, computer: str) -> list[str]:
        with self._read() as session:
            query = select(BangRow.message).where(BangRow.computer == computer)
            return list(session.scalars(query.order_by(BangRow.id)))


# --- pure helpers --------------------------------------------------------------------------


def _free(row: PartitionRow) -> None:
    row.slap_state, row.guid, row.title, row.requested_by = FREE, None, None, ""
    row.requester_computer = row.requester_partition = None
    row.software_release = row.software_type = None
    row.parameters = row.filter = row.connection = None
    row.requested_state = DESTROYED
    row.status_text = row.status_since = row.status_at = None


def _can_host(host: PartitionRow, request: InstanceRequest) -> bool:
    return (
        host.slap_state == BUSY
        and host.requested_state != DESTROYED
        and host.software_release == request.software_release
        and (not request.software_type or host.software_type == request.software_type)
    )


def _gone(request: InstanceRequest) -> dict[str, Any]:
    """The answer to destroying an instance that does not exist (any more)."""
    return {
        "_connection_dict": {},
        "_parameter_dict": {},
        "_requested_state": DESTROYED,
        "instance_title": request.title,
        "slap_computer_id": None,
        "slap_computer_partition_id": None,
        "slap_software_release_url": request.software_release,
        "slap_software_type": request.software_type,
    }


def _ip_lists(
    addresses: list[AddressRow],
) -> tuple[list[tuple[str, str]], list[tuple[str, str, str, str, str]]]:
    ip_list = [(a.interface, a.address) for a in addresses if not a.gateway]
    full = [
        (a.interface, a.address, a.gateway, a.netmask, a.network) for a in addresses if a.gateway
    ]
    return ip_list, full


def _partition_document(
    row: PartitionRow, addresses: list[AddressRow], hosted: list[SharedRow]
) -> ComputerPartition:
    if row.slap_state != BUSY:
        return ComputerPartition(row.computer, row.reference, DESTROYED, need_modification=0)
    ip_list, full_ip_list = _ip_lists(addresses)
    slaves = [
        {
            **instance_xml.loads(shared.parameters),
            "slap_software_type": shared.software_type,
            "slave_reference": shared.guid,
            "slave_title": shared.title,
            "timestamp": shared.timestamp,
        }
        for shared in hosted
    ]
    parameters: dict[str, Any] = {
        **instance_xml.loads(row.parameters),
        "full_ip_list": full_ip_list,
        "instance_title": row.title,
        "ip_list": ip_list,
        "root_instance_title": row.root_title,
        "slap_computer_id": row.computer,
        "slap_computer_partition_id": row.reference,
        "slap_software_release_url": row.software_release,
        "slap_software_type": row.software_type,
        "slave_instance_list": slaves,
        "timestamp": row.timestamp,
    }
    return ComputerPartition(
        computer_id=row.computer,
        partition_id=row.reference,
        requested_state=row.requested_state,
        software_release=SoftwareRelease(row.software_release or "", row.computer),
        parameters=parameters,
        connection=instance_xml.loads(row.connection),
        instance_guid=row.guid,
        access_status=row.status_text or f"#error no data found for {row.guid}",
        filter=instance_xml.loads(row.filter),
        need_modification=1,
    )


def _status(row: Any, reference: str, portal_type: str) -> dict[str, Any]:
    """The master's status dict: `no_data` when nothing was ever reported."""
    now = now_us()
    base = {"user": "SlapOS Master", "state": "", "reference": reference}
    base["portal_type"] = portal_type
    if not row.status_text:
        date = http_date(now)
        text = f"#error no data found for {reference}"
        return {**base, "created_at": date, "since": date, "text": text, "no_data": 1}
    age = now - (row.status_at or 0)
    return {
        **base,
        "created_at": http_date(row.status_at or now),
        "since": http_date(row.status_since or now),
        "text": row.status_text,
        "no_data_since_15_minutes": int(age > 15 * _MINUTE_US),
        "no_data_since_5_minutes": int(age > 5 * _MINUTE_US),
    }


def _text(value: Any, what: str, *, required: bool = False) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise BadRequest(f"{what} must be a non-empty string")
    return value


def _parse_format(
    definition: Any,
) -> tuple[str, dict[str, list[tuple[str, str, str, str, str]]], str | None, str | None]:
    """Validate `slapos format`'s dict → (computer, {partition: address keys}, addr, mask)."""
    if not isinstance(definition, Mapping):
        raise BadRequest("computer configuration must be a dictionary")
    reference = _text(definition.get("reference"), "computer reference", required=True)
    partitions = definition.get("partition_list")
    if not isinstance(partitions, list):
        raise BadRequest("computer configuration has no partition_list")
    result: dict[str, list[tuple[str, str, str, str, str]]] = {}
    for entry in partitions:
        if not isinstance(entry, Mapping):
            raise BadRequest("each partition of partition_list must be a dictionary")
        name = _text(entry.get("reference"), "partition reference", required=True)
        tap = entry.get("tap") or {}
        if not isinstance(tap, Mapping):
            raise BadRequest(f"partition {name}: tap must be a dictionary")
        interface = _text(tap.get("name"), f"partition {name} tap name") or name
        keys: list[tuple[str, str, str, str, str]] = []
        for address in entry.get("address_list") or []:
            if not isinstance(address, Mapping):
                raise BadRequest(f"partition {name}: address_list entries must be dictionaries")
            addr = _text(address.get("addr"), f"partition {name} address", required=True)
            netmask = _text(address.get("netmask"), f"partition {name} netmask")
            keys.append((interface, addr, netmask, "", ""))
        routed = _text(tap.get("ipv4_addr"), f"partition {name} tap ipv4_addr")
        if routed:
            keys.append(
                (
                    f"route_{interface}",
                    routed,
                    _text(tap.get("ipv4_netmask"), f"partition {name} tap ipv4_netmask"),
                    _text(tap.get("ipv4_gateway"), f"partition {name} tap ipv4_gateway"),
                    _text(tap.get("ipv4_network"), f"partition {name} tap ipv4_network"),
                )
            )
        if name in result:
            raise BadRequest(f"partition {name} appears twice in partition_list")
        result[name] = keys
    address = definition.get("address")
    netmask = definition.get("netmask")
    return (
        reference,
        result,
        address if isinstance(address, str) else None,
        netmask if isinstance(netmask, str) else None,
    )
