"""Timestamps and generations of the embedded master, on a real SQLite file.

The timestamp table is the heart: for each operation, exactly which partitions must be
re-processed by their node (timestamp bumped), and whether the computer's
getFullComputerInformation answer changed (generation bumped).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from master_site import (
    COMP,
    JOURNAL,
    SR_A,
    SR_B,
    as_front,
    format_definition,
    front_guid,
    request,
    stamps,
)
from slapgrid.master.storage import MasterStore


def as_root(**kwargs: Any) -> Callable[[MasterStore], Any]:
    return lambda s: request(s, "root", **{"parameters": {"a": "1"}, **kwargs})


def as_child(**kwargs: Any) -> Callable[[MasterStore], Any]:
    return lambda s: request(s, "child", requester=(COMP, "slappart0"), **kwargs)


TIMESTAMP_CASES: list[tuple[str, Callable[[MasterStore], Any], set[str], bool]] = [
    # (case, operation, partitions whose timestamp must move, generation moves?)
    ("identical re-request", as_root(), set(), False),
    ("identical re-request of a child", as_child(), set(), False),
    ("identical shared re-request", as_front(), set(), False),
    ("parameters", as_root(parameters={"a": "2"}), {"slappart0"}, True),
    ("parameter added", as_root(parameters={"a": "1", "b": ""}), {"slappart0"}, True),
    ("requested state", as_root(state="stopped"), {"slappart0"}, True),
    ("software type", as_root(software_type="frontend"), {"slappart0"}, True),
    ("software release", as_root(sr=SR_B), {"slappart0"}, True),
    ("SLA (retention delay)", as_root(filter={"retention_delay": "2"}), {"slappart0"}, True),
    (
        "destroying a child propagates to its children",
        as_child(state="destroyed"),
        {"slappart1", "slappart2"},
        True,
    ),
    (
        "destroying the root propagates to the whole tree",
        as_root(state="destroyed"),
        {"slappart0", "slappart1", "slappart2"},
        True,
    ),
    (
        "a child publishes: its requester re-reads",
        lambda s: s.set_connection(COMP, "slappart1", {"url": "http://child"}),
        {"slappart0"},
        True,
    ),
    (
        "a root publishes: only the answer changes",
        lambda s: s.set_connection(COMP, "slappart0", {"url": "http://root"}),
        set(),
        True,
    ),
    (
        "the host publishes for a shared instance: its requester re-reads",
        lambda s: s.set_connection(COMP, "slappart0", {"u": "1"}, slave_reference=front_guid(s)),
        {"slappart1"},
        True,
    ),
    ("shared instance parameters", as_front(parameters={"url": "y"}), {"slappart0"}, True),
    ("shared instance stopped", as_front(state="stopped"), {"slappart0"}, True),
    ("shared instance destroyed", as_front(state="destroyed"), {"slappart0"}, True),
    (
        "new shared instance",
        lambda s: request(s, "front2", shared=True),
        {"slappart0"},
        True,
    ),
    (
        "bang: the whole tree, not other trees",
        lambda s: s.bang(COMP, "slappart2", "service died"),
        {"slappart0", "slappart1", "slappart2"},
        True,
    ),
    (
        "computer bang: every instance of the computer",
        lambda s: s.computer_bang(COMP, "Reboot"),
        {"slappart0", "slappart1", "slappart2", "slappart3"},
        True,
    ),
    ("rename a child", lambda s: s.rename(COMP, "slappart1", "kid"), {"slappart1"}, True),
    (
        "rename a root: its tree's root title changes",
        lambda s: s.rename(COMP, "slappart0", "trunk"),
        {"slappart0", "slappart1", "slappart2"},
        True,
    ),
    (
        "addresses of a busy partition change",
        lambda s: s.load_computer_configuration(
            format_definition(
                partition_list=[
                    *format_definition()["partition_list"][:3],
                    {"reference": "slappart3", "address_list": [], "tap": {"name": "t"}},
                    *format_definition()["partition_list"][4:],
                ]
            )
        ),
        {"slappart3"},
        True,
    ),
    (
        "same format again",
        lambda s: s.load_computer_configuration(format_definition()),
        set(),
        False,
    ),
    (
        "first started report",
        lambda s: s.report_partition(COMP, "slappart0", "started"),
        set(),
        True,
    ),
    ("supply", lambda s: s.supply(COMP, SR_B), set(), True),
    ("software building", lambda s: s.report_software(COMP, SR_A, "building"), set(), False),
    ("usage report", lambda s: s.use_computer(COMP, JOURNAL), set(), False),
]


@pytest.mark.parametrize(
    ("operation", "bumped", "generation_moves"),
    [case[1:] for case in TIMESTAMP_CASES],
    ids=[case[0] for case in TIMESTAMP_CASES],
)
def test_timestamps_and_generation(
    tree: MasterStore,
    operation: Callable[[MasterStore], Any],
    bumped: set[str],
    generation_moves: bool,
) -> None:
    before, generation = stamps(tree), tree.generation(COMP)
    operation(tree)
    after = stamps(tree)
    moved = {p for p in before if after.get(p) != before[p]}
    assert moved == bumped
    assert all(after[p] > before[p] for p in moved if p in after)
    assert all(isinstance(value, int) for value in after.values())
    assert (tree.generation(COMP) != generation) is generation_moves


def test_repeated_status_report_does_not_move_generation(tree: MasterStore) -> None:
    tree.report_partition(COMP, "slappart0", "started")
    generation = tree.generation(COMP)
    tree.report_partition(COMP, "slappart0", "started")
    assert tree.generation(COMP) == generation


def test_timestamps_strictly_increase_even_with_a_frozen_clock(
    store: MasterStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    request(store, "root")
    monkeypatch.setattr("slapgrid.master.stamps.time.time_ns", lambda: 1_000)
    seen = [stamps(store)["slappart0"]]
    for n in range(3):
        request(store, "root", parameters={"n": n})
        seen.append(stamps(store)["slappart0"])
    assert seen == sorted(set(seen)) and len(seen) == 4
    assert seen[-1] == seen[0] + 3


def test_listener_gets_changed_generations(store: MasterStore) -> None:
    calls: list[dict[str, int]] = []
    store.add_listener(calls.append)
    request(store, "root")
    request(store, "root")  # identical: no call
    assert calls == [{COMP: store.generation(COMP)}]
