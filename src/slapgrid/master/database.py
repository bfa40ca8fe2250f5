"""Opening the master's database: the engines the store's concurrency rests on, and the schema.

Writers are serialised across processes as well as threads. On SQLite (the default) every
connection runs in WAL mode with full sync, and writers start with `BEGIN IMMEDIATE`, so a
write never fails half-way on a lock another process holds. On PostgreSQL every write
transaction first takes one advisory lock, so several master processes on one database make
the same transitions (allocations, unique titles) as one would; readers there see one
snapshot per transaction, as on SQLite.

A SQLite write may also be made `never_waiting`: on the event loop of the master that owns
the database, where waiting for another process's write would hold every other call, it
raises `Busy` at once instead (its caller then waits in a thread).

The schema is made and changed by the Alembic revisions in `migrations/`: `upgrade`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import select
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, inspect, make_url, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from slapgrid.master.errors import MasterError

WRITE_LOCK = 0x5_1A_96_1D  # the advisory lock every write transaction takes on PostgreSQL
MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE = "0001"  # the revision of a database made by a release before migrations
LEGACY_SCHEMA_VERSION = "1"  # what such a release wrote in `meta`
WAL_HEADER = b"\x02\x02"  # a SQLite header's read and write versions (bytes 18, 19) in WAL
log = logging.getLogger(__name__)
_MAY_WAIT: ContextVar[bool] = ContextVar("may_wait", default=True)
# Alembic names its context and each step at every start; `upgrade` logs one line instead
logging.getLogger("alembic").setLevel(logging.WARNING)


def database_url(database: str | Path) -> str:
    """A SQLAlchemy URL, or a file path made into a SQLite URL.

    `postgresql://` (and `postgres://`, as libpq spells it) is served by psycopg 3.
    """
    text = str(database)
    if "://" not in text:
        return f"sqlite:///{Path(text).expanduser().resolve()}"
    scheme, rest = text.split("://", 1)
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg://{rest}"
    if scheme not in ("sqlite", "postgresql+psycopg"):
        raise MasterError(f"database {scheme}://…: only sqlite:// and postgresql:// are served")
    return text


def describe(url: str) -> str:
    """The database as errors name it: a SQLite file's path, else its URL without password."""
    if url.startswith("sqlite:///"):
        return url.removeprefix("sqlite:///")
    return make_url(url).render_as_string(hide_password=True)


class Busy(Exception):
    """Another writer holds the database, and this write may not wait (`never_waiting`)."""


@contextmanager
def never_waiting() -> Iterator[None]:
    """Writes in this block raise `Busy` rather than wait for another writer's to end."""
    token = _MAY_WAIT.set(False)
    try:
        yield
    finally:
        _MAY_WAIT.reset(token)


def may_wait() -> bool:
    return _MAY_WAIT.get()


def is_busy(exc: OperationalError) -> bool:
    """SQLite's answer to a write that may not wait: another connection holds the lock."""
    return getattr(exc.orig, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY


BUSY_TIMEOUT = 30.0
"""Seconds a master waits for the database: a connection, a lock another writer holds."""
READERS = 16
"""Pooled PostgreSQL connections of a master's readers (its generation reads, which go
together, and the nodes' other reads; documents are rendered in a process with one of its
own): fewer when several workers share `max_connections`."""
KEPT_FREE = 10
"""PostgreSQL connections a master's workers leave to others (psql, a migration, a backup),
besides those reserved for superusers."""


def make_engine(
    url: str, busy_timeout: float, *, immediate: bool, readers: int = READERS
) -> Engine:
    """An engine for readers, or (`immediate`) for the serialised writer.

    A writer waits up to `busy_timeout` seconds for another process's write to end.
    """
    if url.startswith("sqlite"):
        return _sqlite_engine(url, busy_timeout, immediate=immediate)
    return _postgresql_engine(url, busy_timeout, immediate=immediate, readers=readers)


def create_sqlite(path: Path) -> None:
    """Make the SQLite database at `path` unless it exists, in WAL mode from its birth.

    It holds every instance's parameters: readable by its owner only (SQLite gives its WAL
    files the database's mode). It is made aside and linked in place, because turning a
    database that others have open to WAL needs a lock SQLite does not wait for: worker
    processes starting together would fail with "database is locked". A file already there
    but not in WAL mode (empty: made by hand) is turned to WAL by one starting master at a
    time, the others waiting on a lock of the file.
    """
    try:
        if path.exists():
            _ensure_wal(path)
            return
        descriptor, aside = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(descriptor)  # mkstemp makes it 0600
        try:
            _to_wal(aside)
            os.link(aside, path)
        except FileExistsError:
            pass  # another master made it first
        finally:
            os.unlink(aside)
    except OSError as exc:
        raise MasterError(f"cannot create the master database {path}: {exc.strerror}") from None
    except sqlite3.Error as exc:
        raise MasterError(f"cannot open the master database {path}: {exc}") from None


def _ensure_wal(path: Path) -> None:
    """An existing database left as it is if its header says WAL, else turned to WAL."""
    with open(path, "rb") as file:
        if file.read(20)[18:20] == WAL_HEADER:
            return
        fcntl.flock(file, fcntl.LOCK_EX)  # not SQLite's own locks (POSIX ones): apart
        _to_wal(path)


def _to_wal(path: Path | str) -> None:
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")


def unusable(url: str, exc: SQLAlchemyError) -> MasterError:
    """A database error in one line, naming the database without its password."""
    reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
    return MasterError(f"cannot use database {describe(url)}: {reason}")


def readers_per_worker(max_connections: int, reserved: int, workers: int) -> int:
    """The reader pool of each of `workers` masters (each has its writer, its listener and
    its render process too), so that together they stay within the server's
    `max_connections`."""
    share = (max_connections - reserved - KEPT_FREE) // workers - 3
    if share < 1:
        raise MasterError(
            f"{workers} workers need {4 * workers + reserved + KEPT_FREE} PostgreSQL "
            f"connections or more; the server allows {max_connections} (max_connections)"
        )
    return min(READERS, share)


def reader_pool(url: str, workers: int) -> int:
    """`readers_per_worker` for the server of `url`, as it is configured."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            limits = [
                int(connection.exec_driver_sql(f"SHOW {name}").scalar_one())
                for name in ("max_connections", "superuser_reserved_connections")
            ]
    except SQLAlchemyError as exc:
        raise unusable(url, exc) from None
    finally:
        engine.dispose()
    return readers_per_worker(*limits, workers)


def _sqlite_engine(url: str, busy_timeout: float, *, immediate: bool) -> Engine:
    patience = int(busy_timeout * 1000)  # ms
    engine = create_engine(
        url,
        connect_args={"timeout": busy_timeout, "check_same_thread": False},
        pool_size=1 if immediate else 8,
        max_overflow=0 if immediate else 32,
    )

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={patience}")
        record.info["busy_timeout"] = patience
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        if immediate:  # the busy timeout this write may wait (0: `never_waiting`)
            wait = patience if may_wait() else 0
            if connection.info.get("busy_timeout") != wait:
                connection.exec_driver_sql(f"PRAGMA busy_timeout={wait}")
                connection.info["busy_timeout"] = wait
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _postgresql_engine(url: str, busy_timeout: float, *, immediate: bool, readers: int) -> Engine:
    """The writer: one connection (the store serialises its threads), READ COMMITTED after
    the lock, so each write sees every write before it. Readers: REPEATABLE READ, so a
    document and the generation it reflects come from one snapshot; a bounded pool of
    `readers`, since every worker process of a fleet's master has its own
    (`readers_per_worker`), and kept whole: a connection opened for a burst and closed
    after it costs more than the read it served."""
    connect_args: dict[str, Any] = {"connect_timeout": max(1, round(busy_timeout))}
    if immediate:  # waiting for the write lock (or any) is bounded as on SQLite
        connect_args["options"] = f"-c lock_timeout={int(busy_timeout * 1000)}"
    engine = create_engine(
        url,
        pool_size=1 if immediate else readers,
        max_overflow=0,
        pool_timeout=busy_timeout,
        # the writer begins its transactions itself (below); psycopg commits and rolls
        # back whatever transaction is open, in autocommit mode too
        isolation_level="AUTOCOMMIT" if immediate else "REPEATABLE READ",
        connect_args=connect_args,
    )
    event.listen(engine, "checkout", _alive)
    if immediate:

        @event.listens_for(engine, "begin")
        def _begin(connection: Any) -> None:
            # one round trip, where psycopg would send its BEGIN alone first: a write holds
            # the lock for each of its round trips (and, in a thread, a GIL wait after each)
            connection.exec_driver_sql(
                f"BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock({WRITE_LOCK})"
            )

    return engine


def _alive(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """A pooled connection the server closed (a restart) is replaced before use.

    An idle connection has nothing to read unless the server said goodbye (or closed it):
    one poll of its socket, where a ping would cost each read a round trip."""
    if dbapi_connection.closed or _readable(dbapi_connection.fileno()):
        raise DisconnectionError("the database closed this connection")


def _readable(descriptor: int) -> bool:
    told = select.poll()  # not select(): a fleet's master has descriptors past 1024
    told.register(descriptor, select.POLLIN)
    return bool(told.poll(0))


def upgrade(engine: Engine, *, create: bool = True) -> None:
    """Bring the database to the newest revision, in one write transaction: serialised with
    every writer of every process, so concurrent starts do not race.

    An empty database is made from scratch (unless not `create`); one a release before
    migrations made (`meta` says schema version 1) is stamped at the baseline first; one at
    a revision this code does not know (a newer release's) is refused, untouched.

    `engine` is a writer (`make_engine(…, immediate=True)`). A master of several worker
    processes calls this once in their parent, before they fork.
    """
    name = describe(engine.url.render_as_string(hide_password=False))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    script = ScriptDirectory.from_config(config)
    head = script.get_current_head()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        current = MigrationContext.configure(connection).get_current_heads()
        known = {revision.revision for revision in script.walk_revisions()}
        unknown = [revision for revision in current if revision not in known]
        if unknown:
            raise MasterError(
                f"database {name} is at schema revision {unknown[0]}, which this slapgrid "
                f"does not know (it knows up to {head}): a newer release made it"
            )
        if not current:
            if inspect(connection).has_table("meta"):
                query = text("SELECT value FROM meta WHERE name = 'schema_version'")
                version = connection.execute(query).scalar()
                if version != LEGACY_SCHEMA_VERSION:
                    raise MasterError(f"database {name} has an unknown schema version {version}")
                command.stamp(config, BASELINE)
                current = (BASELINE,)
            elif not create:
                raise MasterError(f"no master database in {name}")
        if current != (head,):
            command.upgrade(config, "head")
            log.info("master database %s: schema %s → %s", name, ", ".join(current) or "∅", head)
