"""State transitions of the embedded master, on a real SQLite file: requests, destruction,
format, usage and statuses (timestamps and generations: `test_master_timestamps`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from master_site import (
    COMP,
    JOURNAL,
    SR_A,
    as_front,
    format_definition,
    front_guid,
    request,
    stamps,
)
from slapgrid.master import storage
from slapgrid.master.storage import BadRequest, Conflict, MasterStore, NotFound
from slapgrid.slap.marshal import dumps

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
        ({"software_type": "t" * 256}, BadRequest),  # what PostgreSQL's column holds
    ],
)
def test_invalid_requests(store: MasterStore, kwargs: dict[str, Any], error: type) -> None:
    before = store.snapshot()
    with pytest.raises(error):
        request(store, "x", **kwargs)
    assert store.snapshot() == before


def test_titles_longer_than_their_column_are_refused_in_one_line(store: MasterStore) -> None:
    with pytest.raises(BadRequest, match=r"^partition_reference is longer than 255 characters$"):
        request(store, "t" * 256)
    request(store, "t" * 255)
    with pytest.raises(BadRequest, match=r"^new name is longer than 255 characters$"):
        store.rename(COMP, "slappart0", "n" * 256)
    assert [p["title"] for p in store.snapshot()["partitions"] if p["title"]] == ["t" * 255]


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
    tree.set_connection(
        COMP, "slappart0", {"url": "https://front"}, slave_reference=front_guid(tree)
    )
    answer = as_front()(tree)
    assert answer["_connection_dict"] == {"url": "https://front"}
    with pytest.raises(NotFound, match="not hosted here"):
        tree.set_connection(COMP, "slappart3", {"u": "1"}, slave_reference=front_guid(tree))


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
        {"reference": COMP, "partition_list": [], "address": "a" * 256},
        {"reference": COMP, "partition_list": [{"reference": "p", "tap": {"name": "t" * 256}}]},
        {
            "reference": COMP,
            "partition_list": [{"reference": "p", "address_list": [{"addr": "a" * 256}]}],
        },
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
    assert status["text"] == "#error while instanciating: " + ("x" * 100 + "boom")  # whole
    tree.report_partition(COMP, "slappart0", "error", log="y" * 30_000 + "cause")
    status = tree.partition_status(COMP, "slappart0")
    assert status["text"] == "#error while instanciating: ..." + ("y" * 19_995 + "cause")
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
    reopened = MasterStore(tree.url, create=False)
    assert reopened.snapshot() == snapshot and reopened.generation(COMP) == generation
    reopened.close()
    with pytest.raises(storage.MasterError, match="no master database"):
        MasterStore(tmp_path / "missing.db", create=False)
