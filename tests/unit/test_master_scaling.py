"""What a call costs the store, counted where the machine cannot blur it: the SQL statements
each call issues stay the same however many computers the database holds, and none of them
scans a table (benchmarks/profile_master_calls.py measures the time).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from master_site import SR_A, request, small_computer
from slapgrid.master.storage import MasterStore

Statement = tuple[str, Any]


@contextmanager
def recorded() -> Iterator[list[Statement]]:
    """Every statement any engine runs meanwhile, with its parameters."""
    statements: list[Statement] = []

    def record(_conn: Any, _cursor: Any, sql: str, parameters: Any, _ctx: Any, many: bool) -> None:
        statements.append((sql, parameters[0] if many and parameters else parameters))

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def calls(computer: str) -> list[tuple[str, Callable[[MasterStore], Any]]]:
    """One of each call a fleet makes often, on `computer` (registered by the first)."""
    root, child = f"root-{computer}", f"child-{computer}"
    on = {"filter": {"computer_guid": computer}}
    by_root = {**on, "requester": (computer, "slappart0")}
    by_child = {**on, "requester": (computer, "slappart1")}
    return [
        ("register", lambda s: s.load_computer_configuration(small_computer(computer, 10))),
        ("register again", lambda s: s.load_computer_configuration(small_computer(computer, 10))),
        ("supply", lambda s: s.supply(computer, SR_A)),
        ("request new", lambda s: request(s, root, parameters={"a": "1"}, **on)),
        ("request unchanged", lambda s: request(s, root, parameters={"a": "1"}, **on)),
        ("request changed", lambda s: request(s, root, parameters={"a": "2"}, **on)),
        ("request child", lambda s: request(s, child, **by_root)),
        ("request shared", lambda s: request(s, f"front-{computer}", shared=True, **by_child)),
        ("connection", lambda s: s.set_connection(computer, "slappart1", {"url": "x"})),
        ("report", lambda s: s.report_partition(computer, "slappart1", "started")),
        ("bang", lambda s: s.bang(computer, "slappart1", "down")),
        ("document", lambda s: s.computer_document(computer)),
        ("partition", lambda s: s.partition_document(computer, "slappart1")),
        ("ip list", lambda s: s.hosting_ip_list(computer, "slappart1")),
        ("tree", lambda s: s.instance_tree(root)),
        ("destroy", lambda s: request(s, root, state="destroyed", **on)),
        ("destroyed", lambda s: s.destroyed_partition(computer, "slappart1")),
    ]


def run(store: MasterStore, computer: str) -> dict[str, list[Statement]]:
    issued = {}
    for name, call in calls(computer):
        with recorded() as statements:
            call(store)
        issued[name] = statements
    return issued


def scans(database: Path, statements: list[Statement]) -> list[str]:
    """The statements SQLite would answer by reading a whole table (or a whole index)."""
    found = []
    with sqlite3.connect(database) as connection:
        for sql, parameters in statements:
            if not sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
                continue
            plan = connection.execute(f"EXPLAIN QUERY PLAN {sql}", parameters).fetchall()
            steps = [step[-1] for step in plan]
            if any(s.startswith("SCAN ") and s != "SCAN CONSTANT ROW" for s in steps):
                found.append(f"{' '.join(sql.split())[:160]} → {steps}")
    return found


@pytest.fixture
def fleet_store(tmp_path: Path) -> Iterator[MasterStore]:
    store = MasterStore(tmp_path / "master.db")
    yield store
    store.close()


def test_calls_issue_as_many_statements_on_a_larger_fleet_and_scan_nothing(
    fleet_store: MasterStore, tmp_path: Path
) -> None:
    small = run(fleet_store, "FIRST")
    for n in range(30):  # a larger fleet: computers with instances, trees, shared ones
        run(fleet_store, f"FLEET-{n}")
    large = run(fleet_store, "LAST")
    assert {name: len(s) for name, s in large.items()} == {
        name: len(s) for name, s in small.items()
    }
    every = [statement for statements in large.values() for statement in statements]
    assert scans(tmp_path / "master.db", every) == []
