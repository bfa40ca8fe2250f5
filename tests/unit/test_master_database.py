"""The master's database across processes: last contacts, engines, who may open it."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event, make_url, text
from sqlalchemy.orm import Session

from master_site import format_definition, request
from slapgrid.master import computers
from slapgrid.master.connections import raise_file_limit
from slapgrid.master.database import (
    READERS,
    WRITE_LOCK,
    Busy,
    create_sqlite,
    database_url,
    never_waiting,
    reader_pool,
    readers_per_worker,
)
from slapgrid.master.stamps import now_us
from slapgrid.master.storage import CONTACT_DELAY_US, MasterError, MasterStore
from slapgrid.master.transaction import Tx
from slapgrid.slap.documents import AVAILABLE
from support.postgres import Cluster

SOFTWARE = "https://lab.example.com/software/pool/software.cfg"

COMP = "COMP-DB"


@pytest.fixture
def store(database: str) -> Iterator[MasterStore]:
    master = MasterStore(database, default_computer=COMP)
    yield master
    master.close()


def stored_contact(database: str) -> int | None:
    """What another process reads of the computer's last contact."""
    engine = create_engine(database_url(database))
    try:
        with engine.connect() as connection:
            query = text("SELECT last_contact FROM computer WHERE reference = :computer")
            return connection.execute(query, {"computer": COMP}).scalar_one()
    finally:
        engine.dispose()


def test_never_seen_computer_has_no_data(store: MasterStore) -> None:
    assert store.computer_status(COMP)["no_data"] == 1


def test_last_contact_outlives_the_process(store: MasterStore, database: str) -> None:
    generation = store.generation(COMP)
    store.note_contact(COMP, now_us())
    store.close()
    reopened = MasterStore(database, create=False)
    status = reopened.computer_status(COMP)
    assert status["text"] == f"#access {COMP}" and "no_data" not in status
    assert reopened.generation(COMP) == generation  # a contact changes no answer
    reopened.close()


def test_contacts_are_written_together_once_the_oldest_waited(
    store: MasterStore, database: str
) -> None:
    first = now_us()
    assert not store.note_contact(COMP, first)
    assert not store.note_contact(COMP, first + CONTACT_DELAY_US - 1)
    assert stored_contact(database) is None
    assert store.note_contact(COMP, first + CONTACT_DELAY_US)
    store.write_contacts()
    assert stored_contact(database) == first + CONTACT_DELAY_US
    assert not store.note_contact(COMP, first + CONTACT_DELAY_US + 1)  # a new batch


def test_a_contact_older_than_the_stored_one_is_not_written(
    store: MasterStore, database: str
) -> None:
    """Workers sharing a database write their noted contacts in any order."""
    other = MasterStore(database)
    try:
        later = now_us()
        store.note_contact(COMP, later)
        store.write_contacts()
        other.note_contact(COMP, later - 1_000_000)
        other.write_contacts()
        assert stored_contact(database) == later
    finally:
        other.close()


def test_status_compares_the_contact_with_the_latest_report(store: MasterStore) -> None:
    store.note_contact(COMP, now_us())
    store.computer_bang(COMP, "Reboot")
    assert store.computer_status(COMP)["text"] == "#error bang: Reboot"
    store.note_contact(COMP, now_us())
    assert store.computer_status(COMP)["text"] == f"#access {COMP}"


def test_a_new_database_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    store = MasterStore(tmp_path / "master.db", default_computer="COMP-1")
    try:
        for path in tmp_path.glob("master.db*"):  # the WAL files take the database's mode
            assert path.stat().st_mode & 0o777 == 0o600, path
    finally:
        store.close()


def test_a_new_database_is_born_in_wal_mode(tmp_path: Path) -> None:
    """Turning a database others have open to WAL fails at once ("database is locked"):
    worker processes starting together must find it in WAL mode already."""
    path = tmp_path / "master.db"
    create_sqlite(path)
    assert path.read_bytes()[18:20] == b"\x02\x02"  # the header's WAL read and write versions
    assert [child.name for child in tmp_path.iterdir()] == ["master.db"]  # nothing left aside
    before = path.stat()
    create_sqlite(path)  # an existing database is left as it is
    assert path.stat() == before


def test_an_empty_file_is_turned_to_wal_by_one_of_the_masters_starting_on_it(
    tmp_path: Path,
) -> None:
    """A database file made by hand (empty) is in no mode yet: the masters starting together
    on it turn it to WAL one at a time, and none finds it locked."""
    path = tmp_path / "master.db"
    path.touch(mode=0o600)

    def start(_: int) -> None:
        MasterStore(path, default_computer=COMP).close()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(start, range(4)))
    assert path.read_bytes()[18:20] == b"\x02\x02"


def test_a_file_that_is_not_a_database_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "master.db"
    path.write_bytes(b"not a database, but long enough to have a header of 100 bytes " * 4)
    refused = r"^cannot open the master database .*: file is not a database$"
    with pytest.raises(MasterError, match=refused):
        MasterStore(path)


def test_writers_of_two_processes_are_serialised(database: str) -> None:
    """Two stores on one database (as two worker processes): every request from both at
    once gets a partition of its own, and one title asked by both is one instance."""
    first = MasterStore(database, default_computer=COMP)
    second = MasterStore(database, default_computer=COMP)
    try:
        first.load_computer_configuration(format_definition(count=9, reference=COMP))
        titles = [f"instance-{i}" for i in range(8)]
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(
                    lambda pair: request(pair[0], pair[1]),
                    [(first if i % 2 else second, title) for i, title in enumerate(titles)],
                )
            )
            shared = list(pool.map(lambda store: request(store, "same"), [first, second]))
        partitions = {answer["slap_computer_partition_id"] for answer in answers}
        assert len(partitions) == len(titles)
        assert shared[0]["_instance_guid"] == shared[1]["_instance_guid"]
    finally:
        first.close()
        second.close()


def test_a_write_that_may_not_wait_is_refused_at_once_while_another_process_writes(
    tmp_path: Path,
) -> None:
    """On the event loop (`never_waiting`) a write raises `Busy` before it changes anything,
    instead of waiting up to the busy timeout; the contacts noted meanwhile are kept."""
    store = MasterStore(tmp_path / "master.db", default_computer=COMP)
    other_process = sqlite3.connect(tmp_path / "master.db", isolation_level=None)
    try:
        store.note_contact(COMP, now_us())
        other_process.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with never_waiting():
            with pytest.raises(Busy):
                store.supply(COMP, SOFTWARE)
            with pytest.raises(Busy):
                store.write_contacts()
        assert time.monotonic() - started < 10  # the busy timeout is 30 s
        other_process.execute("ROLLBACK")
        with never_waiting():
            store.supply(COMP, SOFTWARE)
            store.write_contacts()
        assert stored_contact(f"sqlite:///{tmp_path / 'master.db'}") is not None
        assert [s.url for s in store.computer_document(COMP)[1].software_releases] == [SOFTWARE]
    finally:
        other_process.close()
        store.close()


def test_an_empty_database_is_not_a_master_database_when_not_created(
    tmp_path: Path, postgres_cluster: Cluster
) -> None:
    with pytest.raises(MasterError, match=r"^no master database at "):
        MasterStore(tmp_path / "master.db", create=False)
    with pytest.raises(MasterError, match=r"^no master database in postgresql"):
        MasterStore(postgres_cluster.create_database(), create=False)


def test_errors_naming_a_database_hide_its_password() -> None:
    url = "postgresql://user:s3cret@/db?host=/nonexistent-socket-dir"
    with pytest.raises(MasterError) as refused:
        MasterStore(url, busy_timeout=1)
    message = str(refused.value)
    assert "s3cret" not in message and "***" in message and "\n" not in message


def test_other_databases_are_refused_in_one_line() -> None:
    with pytest.raises(MasterError, match=r"^database mysql://…: only sqlite:// and postgresql"):
        MasterStore("mysql://user@host/db")


def test_a_write_on_postgresql_holds_the_write_lock(postgres_cluster: Cluster) -> None:
    store = MasterStore(postgres_cluster.create_database())
    query = text(
        "SELECT objid FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    )
    try:
        held = store.write_with(lambda session: list(session.scalars(query)))
        read = store.read_with(lambda session: list(session.scalars(query)))
    finally:
        store.close()
    assert held == [WRITE_LOCK] and read == []


def test_a_write_is_one_transaction_begun_with_its_lock_in_one_round_trip(
    postgres_cluster: Cluster,
) -> None:
    """The writer's connection is in autocommit mode, so that it sends BEGIN and the lock
    together: its writes must still be one transaction, seen whole or not at all."""
    store = MasterStore(postgres_cluster.create_database(), default_computer=COMP)
    sent: list[str] = []
    event.listen(store._writer, "before_cursor_execute", lambda *args: sent.append(args[2]))
    other = text("SELECT requested_state FROM software_installation WHERE url = :url")
    outside: list[list[str]] = []

    def supply_then_fail(session: Session) -> None:
        computers.supply(Tx(session), COMP, SOFTWARE, AVAILABLE)
        session.flush()
        outside.append(
            store.read_with(lambda reader: list(reader.scalars(other, {"url": SOFTWARE})))
        )
        raise RuntimeError("the caller's work failed")

    try:
        with pytest.raises(RuntimeError):
            store.write_with(supply_then_fail)
        assert store.read_with(lambda reader: list(reader.scalars(other, {"url": SOFTWARE}))) == []
        store.supply(COMP, SOFTWARE)
        assert store.snapshot()["software"][0]["requested_state"] == AVAILABLE
    finally:
        store.close()
    assert outside == [[]]  # not seen before the commit
    begins = [statement for statement in sent if statement.startswith("BEGIN")]
    assert len(begins) == 2 and all("pg_advisory_xact_lock" in begin for begin in begins)


def test_pooled_connections_the_server_closed_are_replaced_unseen(
    postgres_cluster: Cluster,
) -> None:
    """No ping per read: a closed connection is told by its socket, and replaced, whatever
    its descriptor's number (a fleet's master holds thousands)."""
    url = postgres_cluster.create_database()
    raise_file_limit()
    held = [os.pipe() for _ in range(600)]  # the connections' descriptors past 1024
    store = MasterStore(url, default_computer="COMP-0")
    try:
        with ThreadPoolExecutor(4) as pool:  # several connections in each pool
            list(pool.map(lambda _: store.generation("COMP-0", fresh=True), range(8)))
        store.supply("COMP-0", SOFTWARE)
        name = make_url(url).database
        postgres_cluster.psql(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "  # gone when it returns
            f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        )
        before = store.generation("COMP-0", fresh=True)
        store.supply("COMP-0", SOFTWARE, "destroyed")
        assert store.generation("COMP-0", fresh=True) > before
        assert store.snapshot()["software"][0]["requested_state"] == "destroyed"
    finally:
        store.close()
        for pipe in held:
            os.close(pipe[0])
            os.close(pipe[1])


def test_workers_share_the_servers_connections() -> None:
    assert readers_per_worker(100, 3, 1) == READERS
    assert readers_per_worker(100, 3, 8) == 7  # 8 x (7 readers + writer, listener, renders)
    with pytest.raises(MasterError, match=r"^40 workers need 173 PostgreSQL connections or more"):
        readers_per_worker(100, 3, 40)


def test_the_reader_pool_follows_the_servers_settings(postgres_cluster: Cluster) -> None:
    url = postgres_cluster.url()
    limit = int(postgres_cluster.psql("SHOW max_connections"))
    reserved = int(postgres_cluster.psql("SHOW superuser_reserved_connections"))
    assert reader_pool(url, 4) == readers_per_worker(limit, reserved, 4)
    with pytest.raises(MasterError, match="the server allows"):
        reader_pool(url, limit)
