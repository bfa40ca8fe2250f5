"""The master's database across processes: last contacts, and databases of older code."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from slapgrid.master.stamps import now_us
from slapgrid.master.storage import CONTACT_DELAY_US, MasterStore

COMP = "COMP-DB"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "master.db"


@pytest.fixture
def store(path: Path) -> Iterator[MasterStore]:
    master = MasterStore(path, default_computer=COMP)
    yield master
    master.close()


def stored_contact(path: Path) -> int | None:
    with closing(sqlite3.connect(path)) as connection:
        query = "SELECT last_contact FROM computer WHERE reference = ?"
        [(value,)] = connection.execute(query, (COMP,)).fetchall()
    return value


def test_never_seen_computer_has_no_data(store: MasterStore) -> None:
    assert store.computer_status(COMP)["no_data"] == 1


def test_last_contact_outlives_the_process(store: MasterStore, path: Path) -> None:
    generation = store.generation(COMP)
    store.note_contact(COMP, now_us())
    store.close()
    reopened = MasterStore(path, create=False)
    status = reopened.computer_status(COMP)
    assert status["text"] == f"#access {COMP}" and "no_data" not in status
    assert reopened.generation(COMP) == generation  # a contact changes no answer
    reopened.close()


def test_contacts_are_written_together_once_the_oldest_waited(
    store: MasterStore, path: Path
) -> None:
    first = now_us()
    assert not store.note_contact(COMP, first)
    assert not store.note_contact(COMP, first + CONTACT_DELAY_US - 1)
    assert stored_contact(path) is None
    assert store.note_contact(COMP, first + CONTACT_DELAY_US)
    store.write_contacts()
    assert stored_contact(path) == first + CONTACT_DELAY_US
    assert not store.note_contact(COMP, first + CONTACT_DELAY_US + 1)  # a new batch


def test_status_compares_the_contact_with_the_latest_report(store: MasterStore) -> None:
    store.note_contact(COMP, now_us())
    store.computer_bang(COMP, "Reboot")
    assert store.computer_status(COMP)["text"] == "#error bang: Reboot"
    store.note_contact(COMP, now_us())
    assert store.computer_status(COMP)["text"] == f"#access {COMP}"


def test_database_of_the_previous_code_gets_the_column(store: MasterStore, path: Path) -> None:
    generation = store.generation(COMP)
    store.close()
    with closing(sqlite3.connect(path)) as connection:  # as the previous code created it
        connection.execute("ALTER TABLE computer DROP COLUMN last_contact")
        connection.commit()
    for _ in range(2):  # the upgrade is idempotent
        upgraded = MasterStore(path, create=False)
        assert upgraded.generation(COMP) == generation
        upgraded.note_contact(COMP, now_us())
        assert upgraded.computer_status(COMP)["text"] == f"#access {COMP}"
        upgraded.close()


def test_a_new_database_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    store = MasterStore(tmp_path / "master.db", default_computer="COMP-1")
    try:
        for path in tmp_path.glob("master.db*"):  # the WAL files take the database's mode
            assert path.stat().st_mode & 0o777 == 0o600, path
    finally:
        store.close()
