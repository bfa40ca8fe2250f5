"""Opening the master's database: the engines the store's concurrency rests on, and the schema.

On SQLite (the default) every connection runs in WAL mode with full sync, and writers start
with `BEGIN IMMEDIATE`, so a write never fails half-way on a lock another process holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Column, create_engine, event, inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from slapgrid.master.errors import MasterError
from slapgrid.master.tables import (
    SCHEMA_VERSION,
    Base,
    ComputerRow,
    MetaRow,
    PartitionRow,
    SharedRow,
)

# columns added after databases of this schema version were created: added in place at start
ADDED_COLUMNS: tuple[Column[Any], ...] = (
    ComputerRow.__table__.c.last_contact,
    PartitionRow.__table__.c.owner,
    SharedRow.__table__.c.owner,
)


def database_url(database: str | Path) -> str:
    """A SQLAlchemy URL, or a file path made into a SQLite URL.

    `postgresql://` (and `postgres://`, as libpq spells it) is served by psycopg 3.
    """
    text = str(database)
    if "://" in text:
        scheme, rest = text.split("://", 1)
        if scheme in ("postgresql", "postgres"):
            return f"postgresql+psycopg://{rest}"
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def make_engine(url: str, busy_timeout: float, *, immediate: bool, durable: bool = True) -> Engine:
    """An engine for readers, or (`immediate`) for a serialised writer.

    A writer that is not `durable` skips the fsync of each commit: what it writes survives
    a crash of the process, not of the machine (fit for last contacts, not for state).
    """
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(
        url,
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


def init_schema(engine: Engine, create: bool) -> None:
    """Create the tables (when `create`), add missing columns, refuse another schema version."""
    if create:
        Base.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        version = session.get(MetaRow, "schema_version")
        if version is None:
            session.add(MetaRow(name="schema_version", value=SCHEMA_VERSION))
        elif version.value != SCHEMA_VERSION:
            raise MasterError(f"database schema version {version.value}, expected {SCHEMA_VERSION}")
    with engine.begin() as connection:
        add_missing_columns(connection, ADDED_COLUMNS)


def add_missing_columns(connection: Connection, columns: tuple[Column[Any], ...]) -> None:
    """Add each column its table lacks (nullable, no default): a database keeps working."""
    inspector = inspect(connection)
    for column in columns:
        table = column.table.name
        if not inspector.has_table(table):
            continue
        if column.name not in {known["name"] for known in inspector.get_columns(table)}:
            kind = column.type.compile(dialect=connection.dialect)
            connection.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column.name} {kind}")
