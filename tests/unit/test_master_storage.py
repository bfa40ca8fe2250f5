"""State transitions of the embedded master, on a real SQLite file.

The timestamp table is the heart: for each operation, exactly which partitions must be
re-processed by their node (timestamp bumped), and whether the computer's
getFullComputerInformation answer changed (generation bumped).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from slapgrid.master import storage
from slapgrid.master.storage import (
    BadRequest,
    Conflict,
    InstanceRequest,
    MasterStore,
    NotFound,
)
from slapgrid.slap.marshal import dumps

COMP = "COMP-1"
SR_A = "https://example.com/a/software.cfg"
SR_B = "https://example.com/b/software.cfg"
JOURNAL = (
    '<?xml version="1.0"?><journal><transaction type="Sale Packing List">'
    "<title>Resource consumptions</title><start_date></start_date>"
    "<stop_date>2026-11-24 at 15:03:21</stop_date><reference>COMP-1</reference>"
    "<currency></currency><payment_mode></payment_mode><category></category>"
    '<arrow type="Administration"><source></source><destination></destination></arrow>'
    "<movement><resource>CPU Consumption</resource><title>t</title>"
    "<reference>slappart0</reference><quantity>42.42</quantity><price>0.00</price>"
    "<VAT>None</VAT><category>None</category></movement></transaction></journal>"
)


def format_definition(count: int = 6, **overrides: Any) -> dict[str, Any]:
    partitions = [
        {
            "reference": f"slappart{i}",
            "address_list": [
                {"addr": f"10.0.0.{i + 1}", "netmask": "255.255.255.0"},
                {"addr": f"fd00::{i + 1}", "netmask": "ffff::"},
            ],
            "tap": {
                "name": f"slaptap{i}",
                "ipv4_addr": f"10.8.0.{i + 1}",
                "ipv4_gateway": "10.8.0.254",
                "ipv4_netmask": "255.255.255.0",
                "ipv4_network": "10.8.0.0",
            },
        }
        for i in range(count)
    ]
    return {"reference": COMP, "address": "192.0.2.1", "netmask": "255.255.255.0"} | {
        "partition_list": partitions,
        **overrides,
    }


@pytest.fixture
def store(tmp_path: Path) -> MasterStore:
    master = MasterStore(tmp_path / "master.db", default_computer=COMP)
    master.load_computer_configuration(format_definition())
    master.supply(COMP, SR_A)
    yield master
    master.close()


def request(store: MasterStore, title: str, **kwargs: Any) -> dict[str, Any]:
    return store.request(InstanceRequest(kwargs.pop("sr", SR_A), title, **kwargs))


def stamps(store: MasterStore) -> dict[str, int]:
    return {
        p["partition"]: p["timestamp"]
        for p in store.snapshot()["partitions"]
        if p["slap_state"] == "busy"
    }


@pytest.fixture
def tree(store: MasterStore) -> MasterStore:
    """root(0) → child(1) → grandchild(2); other(3) alone; shared `front` of child on root."""
    request(store, "root", parameters={"a": "1"})
    request(store, "child", requester=(COMP, "slappart0"))
    request(store, "grandchild", sr=SR_B, requester=(COMP, "slappart1"))
    request(store, "other")
    request(store, "front", shared=True, parameters={"url": "x"}, requester=(COMP, "slappart1"))
    return store


def as_root(**kwargs: Any) -> Callable[[MasterStore], Any]:
    return lambda s: request(s, "root", **{"parameters": {"a": "1"}, **kwargs})


def as_child(**kwargs: Any) -> Callable[[MasterStore], Any]:
    return lambda s: request(s, "child", requester=(COMP, "slappart0"), **kwargs)


def as_front(**kwargs: Any) -> Callable[[MasterStore], Any]:
    defaults = {"parameters": {"url": "x"}, "shared": True, "requester": (COMP, "slappart1")}
    return lambda s: request(s, "front", **{**defaults, **kwargs})


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
        lambda s: s.set_connection(COMP, "slappart0", {"u": "1"}, slave_reference=_front(s)),
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


def _front(store: MasterStore) -> str:
    return next(s["guid"] for s in store.snapshot()["shared"] if s["title"] == "front")


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


# --- requests ------------------------------------------------------------------------------


def test_allocation_answer_has_the_master_shape(store: MasterStore) -> None:
    answer = request(store, "root", parameters={"n": 1}, filter={"retention_delay": 3})
    assert answer["slap_computer_partition_id"] == "slappart0"
    assert answer["_parameter_dict"] == {"n": "1"}  # strings, as through instance XML
    assert answer["_filter_dict"] == {"retention_delay": "3"}
    assert answer["_requested_state"] == "started"
    assert answer["_instance_guid"].startswith("SOFTINST-")
    assert answer["ip_list"] == [("slaptap0", "10.0.0.1"), ("slaptap0", "fd00::1")]
    assert answer["full_ip_list"] == [
        ("route_slaptap0", "10.8.0.1", "10.8.0.254", "255.255.255.0", "10.8.0.0")
    ]
    assert isinstance(answer["timestamp"], int)


def test_state_none_means_started_and_a_stopped_root_stops_its_children(
    store: MasterStore,
) -> None:
    request(store, "root", state="stopped")
    assert request(store, "root")["_requested_state"] == "started"
    request(store, "root", state="stopped")
    child = request(store, "child", state="started", requester=(COMP, "slappart0"))
    assert child["_requested_state"] == "stopped"
    child = request(store, "child", state="destroyed", requester=(COMP, "slappart0"))
    assert child["_requested_state"] == "destroyed"


def test_no_free_partition_is_404_and_changes_nothing(store: MasterStore) -> None:
    for n in range(6):
        request(store, f"i{n}")
    before, generation = store.snapshot(), store.generation(COMP)
    with pytest.raises(NotFound, match="no free partition"):
        request(store, "one-too-many")
    assert store.snapshot() == before and store.generation(COMP) == generation


def test_destroying_what_does_not_exist_allocates_nothing(store: MasterStore) -> None:
    answer = request(store, "ghost", state="destroyed")
    assert answer["_requested_state"] == "destroyed"
    assert answer["slap_computer_partition_id"] is None
    assert stamps(store) == {}


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"state": "running"}, BadRequest),
        ({"parameters": ["not", "a", "dict"]}, BadRequest),
        ({"parameters": {"bad": "\x00"}}, BadRequest),
        ({"filter": {"computer_guid": "NOPE"}}, NotFound),
        ({"requester": (COMP, "slappart5")}, NotFound),  # free partition: no instance
        ({"requester": ("NOPE", "slappart0")}, NotFound),
        ({"shared": True}, NotFound),  # nothing can host it yet
    ],
)
def test_invalid_requests(store: MasterStore, kwargs: dict[str, Any], error: type) -> None:
    before = store.snapshot()
    with pytest.raises(error):
        request(store, "x", **kwargs)
    assert store.snapshot() == before


def test_shared_instance_host_follows_instance_guid(store: MasterStore) -> None:
    request(store, "a")
    second = request(store, "b")
    answer = request(store, "s1", shared=True, filter={"instance_guid": second["_instance_guid"]})
    assert answer["slap_computer_partition_id"] == "slappart1"
    proxy_style = request(store, "s2", shared=True, filter={"instance_guid": f"{COMP}-slappart1"})
    assert proxy_style["slap_computer_partition_id"] == "slappart1"


def test_shared_instances_are_listed_on_their_host(tree: MasterStore) -> None:
    _, computer = tree.computer_document(COMP)
    host = computer.partitions[0]
    [front] = host.parameters["slave_instance_list"]
    assert front["slave_title"] == "front" and front["url"] == "x"
    assert front["slave_reference"].startswith("SHARED-")
    assert front["slap_software_type"] == "default" and isinstance(front["timestamp"], int)
    request(tree, "front", shared=True, state="stopped", requester=(COMP, "slappart1"))
    _, computer = tree.computer_document(COMP)
    assert computer.partitions[0].parameters["slave_instance_list"] == []


def test_shared_connection_reaches_its_requester(tree: MasterStore) -> None:
    tree.set_connection(COMP, "slappart0", {"url": "https://front"}, slave_reference=_front(tree))
    answer = as_front()(tree)
    assert answer["_connection_dict"] == {"url": "https://front"}
    with pytest.raises(NotFound, match="not hosted here"):
        tree.set_connection(COMP, "slappart3", {"u": "1"}, slave_reference=_front(tree))


# --- destruction ---------------------------------------------------------------------------


def test_destroy_lifecycle_frees_children_first(tree: MasterStore) -> None:
    request(tree, "root", parameters={"a": "1"}, state="destroyed")
    message = tree.destroyed_partition(COMP, "slappart0")
    assert message.startswith("Not destroying yet") and "child" in message
    assert tree.destroyed_partition(COMP, "slappart2") == "OK"
    assert tree.destroyed_partition(COMP, "slappart1") == "OK"
    assert tree.snapshot()["shared"] == []  # requested by the freed child
    assert tree.destroyed_partition(COMP, "slappart0") == "OK"
    assert tree.destroyed_partition(COMP, "slappart0") == "OK"  # idempotent
    assert set(stamps(tree)) == {"slappart3"}
    _, computer = tree.computer_document(COMP)
    free = computer.partitions[0]
    assert free.is_free and free.parameters is None and free.need_modification == 0
    again = request(tree, "root")  # the title is usable again
    assert again["slap_computer_partition_id"] == "slappart0"


def test_freeing_a_host_tells_its_shared_instances_requesters(tree: MasterStore) -> None:
    hosted = request(tree, "other-front", shared=True, requester=(COMP, "slappart3"))
    assert hosted["slap_computer_partition_id"] == "slappart0"
    request(tree, "root", parameters={"a": "1"}, state="destroyed")
    for pid in ("slappart2", "slappart1"):
        tree.destroyed_partition(COMP, pid)
    before = stamps(tree)["slappart3"]
    tree.destroyed_partition(COMP, "slappart0")
    assert stamps(tree)["slappart3"] > before
    [orphan] = tree.snapshot()["shared"]
    assert orphan["title"] == "other-front" and orphan["host"] is None


def test_destroyed_report_of_a_wanted_partition_is_refused(tree: MasterStore) -> None:
    before = tree.snapshot()
    with pytest.raises(Conflict):
        tree.destroyed_partition(COMP, "slappart3")
    with pytest.raises(NotFound):
        tree.destroyed_partition(COMP, "slappart99")
    assert tree.snapshot() == before


def test_software_release_destruction(store: MasterStore) -> None:
    with pytest.raises(Conflict):
        store.report_software(COMP, SR_A, "destroyed")
    store.supply(COMP, SR_A, "destroyed")
    store.report_software(COMP, SR_A, "destroyed")
    assert store.snapshot()["software"] == []
    with pytest.raises(NotFound):
        store.report_software(COMP, SR_A, "destroyed")


# --- format, usage, statuses ----------------------------------------------------------------


def test_format_removes_free_partitions_and_keeps_busy_ones(store: MasterStore) -> None:
    request(store, "root")
    store.load_computer_configuration(format_definition(count=1) | {"partition_list": []})
    assert [p["partition"] for p in store.snapshot()["partitions"]] == ["slappart0"]


@pytest.mark.parametrize(
    "definition",
    [
        ["not", "a", "dict"],
        {"partition_list": []},
        {"reference": COMP},
        {"reference": COMP, "partition_list": [{"address_list": []}]},
        {"reference": COMP, "partition_list": [{"reference": "p", "address_list": [{}]}]},
        {"reference": COMP, "partition_list": [{"reference": "p"}, {"reference": "p"}]},
    ],
)
def test_invalid_format_is_refused(store: MasterStore, definition: Any) -> None:
    before = store.snapshot()
    with pytest.raises(BadRequest):
        store.load_computer_configuration(definition)
    assert store.snapshot() == before


def test_usage_reports_are_validated(store: MasterStore) -> None:
    store.use_computer(COMP, JOURNAL)
    assert store.usage_reports(COMP) == [JOURNAL]
    for bad in ("<journal/>", "not xml", JOURNAL.replace("42.42", "lots")):
        with pytest.raises(BadRequest):
            store.use_computer(COMP, bad)
    assert store.usage_reports(COMP) == [JOURNAL]


def test_statuses(tree: MasterStore) -> None:
    assert tree.partition_status(COMP, "slappart0")["no_data"] == 1
    tree.report_partition(COMP, "slappart0", "error", log="x" * 100 + "boom")
    status = tree.partition_status(COMP, "slappart0")
    assert status["text"] == "#error while instanciating: " + ("x" * 76 + "boom")
    assert status["no_data_since_5_minutes"] == 0
    tree.report_software(COMP, SR_A, "available")
    assert tree.software_status(COMP, SR_A)["text"] == f"#access software release {SR_A} available"
    tree.computer_bang(COMP, "Reboot")
    assert tree.computer_status(COMP)["text"] == "#error bang: Reboot"
    assert tree.computer_bangs(COMP) == ["Reboot"]
    _, computer = tree.computer_document(COMP)
    assert computer.partitions[0].access_status.startswith("#error while instanciating")


def test_hosting_ip_list_spans_the_tree(tree: MasterStore) -> None:
    addresses = tree.hosting_ip_list(COMP, "slappart2")
    assert ("slaptap0", "10.0.0.1") in addresses and ("slaptap2", "fd00::3") in addresses
    assert ("slaptap3", "10.0.0.4") not in addresses


def test_document_is_marshallable_and_registered_partitions_are_synced(tree: MasterStore) -> None:
    _, computer = tree.computer_document(COMP)
    assert b"slapos.slap.slap" in dumps(computer.to_wire())
    assert tree.partition_document(COMP, "slappart0").synced is True
    assert tree.partition_document(COMP, "slappart5").synced is None
    with pytest.raises(NotFound):
        tree.partition_document(COMP, "slappart9")


def test_reopening_keeps_everything(tree: MasterStore, tmp_path: Path) -> None:
    snapshot, generation = tree.snapshot(), tree.generation(COMP)
    tree.close()
    reopened = MasterStore(tmp_path / "master.db", create=False)
    assert reopened.snapshot() == snapshot and reopened.generation(COMP) == generation
    reopened.close()
    with pytest.raises(storage.MasterError, match="no master database"):
        MasterStore(tmp_path / "missing.db", create=False)
