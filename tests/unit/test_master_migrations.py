"""The master's schema migrations: a database written by the previous release (the one
before migrations, tests/unit/data/release-5cf8421, made by tests/master_release_db.py)
opens and serves the same answers; a database at the baseline is upgraded in place; one of
a newer release is refused; concurrent starts do not race."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, MetaData, create_engine, inspect, text

import master_release_db
from slapgrid.master.database import BASELINE, MIGRATIONS, database_url, make_engine, upgrade
from slapgrid.master.storage import InstanceRequest, MasterError, MasterStore, now_us
from slapgrid.master.tables import Base
from support.postgres import Cluster

RELEASE = Path(__file__).parent / "data" / "release-5cf8421"
HEAD = max(path.name[:4] for path in (MIGRATIONS / "versions").glob("0*.py"))


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with nothing in it (the `database` fixture's are at the newest schema)."""
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_cluster").create_database()
    return str(tmp_path / "master.db")


@contextmanager
def engine_of(database: str) -> Iterator[Engine]:
    engine = create_engine(database_url(database))
    try:
        yield engine
    finally:
        engine.dispose()


def scalar(database: str, sql: str) -> Any:
    with engine_of(database) as engine, engine.connect() as connection:
        return connection.execute(text(sql)).scalar()


def previous_release_database(directory: Path) -> Path:
    path = directory / "previous.db"
    with closing(sqlite3.connect(path)) as connection:
        connection.executescript((RELEASE / "master.sql").read_text())
    return path


def recorded_answers() -> dict[str, Any]:
    return json.loads((RELEASE / "answers.json").read_text())


def answers_of(database: str | Path) -> dict[str, Any]:
    """What today's master answers from the database (migrated as it opens)."""
    store = MasterStore(database, create=False)
    try:
        with master_release_db.clock(master_release_db.READ_AT_US):
            return master_release_db.answers(store)
    finally:
        store.close()


def schema(database: str | Path) -> dict[str, Any]:
    """Tables, columns, keys and indexes, in no particular order."""
    with engine_of(str(database)) as engine, engine.connect() as connection:
        inspector = inspect(connection)
        return {
            table: {
                "columns": {
                    c["name"]: (str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)
                },
                "primary key": inspector.get_pk_constraint(table)["constrained_columns"],
                "foreign keys": sorted(
                    (f["constrained_columns"], f["referred_table"], f["options"])
                    for f in inspector.get_foreign_keys(table)
                ),
                "unique": sorted(
                    u["column_names"] for u in inspector.get_unique_constraints(table)
                ),
                "indexes": sorted(
                    (i["name"], i["column_names"], bool(i["unique"]))
                    for i in inspector.get_indexes(table)
                ),
            }
            for table in inspector.get_table_names()
        }


def test_the_previous_release_database_answers_the_same(tmp_path: Path) -> None:
    path = previous_release_database(tmp_path)
    assert answers_of(path) == recorded_answers()
    assert scalar(str(path), "SELECT version_num FROM alembic_version") == HEAD
    # the previous release would refuse it now, in one line, rather than run on it
    assert scalar(str(path), "SELECT value FROM meta WHERE name = 'schema_version'") == "2"
    assert answers_of(path) == recorded_answers()  # opening again changes nothing


def test_the_migrated_schema_is_a_new_one(tmp_path: Path) -> None:
    migrated = previous_release_database(tmp_path)
    MasterStore(migrated, create=False).close()
    new = tmp_path / "new.db"
    MasterStore(new).close()
    assert schema(migrated) == schema(new)


def differences_from_the_models(database: str) -> list[Any]:
    with engine_of(database) as engine, engine.connect() as connection:
        return compare_metadata(MigrationContext.configure(connection), Base.metadata)


def test_the_migrations_make_the_models_tables(empty_database: str) -> None:
    MasterStore(empty_database).close()
    assert differences_from_the_models(empty_database) == []


def test_a_baseline_database_is_upgraded_in_place(
    postgres_cluster: Cluster, tmp_path: Path
) -> None:
    """A PostgreSQL database made at the baseline (the first release's schema: no last
    contacts, no owners) and filled with the previous release's data."""
    url = postgres_cluster.create_database()
    with engine_of(url) as engine:
        with engine.begin() as connection:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            command.upgrade(config, BASELINE)
        copy_rows(previous_release_database(tmp_path), engine)
    answers = answers_of(url)
    expected = recorded_answers()
    assert answers.pop("instance_trees_of_owner") == []  # the first release knew no owner
    del expected["instance_trees_of_owner"]
    assert "#access" not in answers.pop("computer_status COMP-A")["text"]  # nor contacts
    del expected["computer_status COMP-A"]
    assert answers == expected
    assert scalar(url, "SELECT version_num FROM alembic_version") == HEAD
    assert differences_from_the_models(url) == []
    store = MasterStore(url)  # it serves writes too: owners, contacts, new rows
    try:
        comp = master_release_db.COMPUTERS[0]
        request = InstanceRequest(master_release_db.SR, "new", owner="bob", filter={})
        store.default_computer = comp
        assert store.request(request)["slap_computer_partition_id"] == "slappart3"
        assert [tree["title"] for tree in store.instance_trees("bob")] == ["new"]
        store.use_computer(comp, master_release_db.USAGE)
        assert len(store.usage_reports(comp)) == 2
        store.note_contact(comp, now_us())
        assert store.computer_status(comp)["text"] == f"#access {comp}"
    finally:
        store.close()


def copy_rows(source: Path, target: Engine) -> None:
    """Rows of a SQLite database into the target's tables, the columns they have; the
    target's id sequences moved past them."""
    tables = MetaData()
    tables.reflect(target)
    with engine_of(str(source)) as engine, engine.connect() as reading, target.begin() as writing:
        for table in tables.sorted_tables:
            if table.name in ("alembic_version", "meta"):  # the baseline wrote them
                continue
            names = ", ".join(f'"{column.name}"' for column in table.columns)
            rows = reading.execute(text(f'SELECT {names} FROM "{table.name}"')).mappings()
            batch = [dict(row) for row in rows]
            if batch:
                writing.execute(table.insert(), batch)
            if "id" in table.columns:
                writing.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('\"{table.name}\"', 'id'), "
                        f'(SELECT coalesce(max(id), 0) + 1 FROM "{table.name}"), false)'
                    )
                )


def test_a_database_of_a_newer_release_is_refused(empty_database: str) -> None:
    MasterStore(empty_database).close()
    with engine_of(empty_database) as engine, engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    with pytest.raises(MasterError) as refused:
        MasterStore(empty_database)
    message = str(refused.value)
    assert "9999_future" in message and "newer release" in message and "\n" not in message
    assert scalar(empty_database, "SELECT version_num FROM alembic_version") == "9999_future"


def test_a_database_of_an_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    path = previous_release_database(tmp_path)
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("UPDATE meta SET value = '7'")
        connection.commit()
    with pytest.raises(MasterError, match=r"unknown schema version 7$"):
        MasterStore(path)


def test_a_parent_upgrades_once_and_its_workers_find_it_done(empty_database: str) -> None:
    """What a master of several worker processes does before it forks them."""
    engine = make_engine(database_url(empty_database), 5.0, immediate=True)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    assert scalar(empty_database, "SELECT version_num FROM alembic_version") == HEAD
    MasterStore(empty_database, create=False).close()


def test_concurrent_starts_do_not_race(empty_database: str) -> None:
    """Worker processes starting together on a new database: one makes it, the others
    wait and find it made."""

    def start(_: int) -> None:
        MasterStore(empty_database, default_computer="COMP-1").close()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(start, range(4)))
    assert scalar(empty_database, "SELECT version_num FROM alembic_version") == HEAD
