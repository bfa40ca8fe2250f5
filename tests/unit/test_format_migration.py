"""`slapgrid format` on a node the reference formatted: its definition is read, and its
partitions, users, addresses, taps and tun kept.

data/reference-format/ holds a definition written by the reference's own code
(slapos.format.Computer.dump, via tests/interop/reference_format.py): slapos.json as
`computer_json`, slapos.xml as `computer_xml`.
"""

from __future__ import annotations

import shutil
from ipaddress import IPv6Interface
from pathlib import Path
from typing import Any

import pytest

from slapgrid.node.format.host import Host, resolve_ipv6
from slapgrid.node.format.plan import FormatPlan, plan_format
from slapgrid.node.format.previous import from_reference, load_previous
from slapgrid.node.format.steps import EnsureUser, FormatError
from slapgrid.node.identity import Identity
from support.format_configs import config

DATA = Path(__file__).with_name("data") / "reference-format"
ROOT = Identity("root", 0, 0, "/bin/bash")
ALICE = Identity("alice", 1000, 1000, "/bin/bash")


@pytest.fixture
def reference() -> dict[str, Any]:
    previous = load_previous(DATA / "absent.json", DATA / "slapos.xml")
    assert previous is not None
    return previous


def plan(previous: dict[str, Any], identity: Identity = ROOT, amount: int = 3) -> FormatPlan:
    cfg = config(amount)
    return plan_format(cfg, previous, Host(identity, resolve_ipv6(cfg, previous)))


def test_the_reference_xml_and_json_say_the_same(reference: dict[str, Any]) -> None:
    assert load_previous(DATA / "slapos.json") == reference
    assert from_reference(reference)


def test_partitions_keep_names_users_and_addresses(reference: dict[str, Any]) -> None:
    result = plan(reference)
    partitions = result.definition["partition_list"]
    assert [p["reference"] for p in partitions] == ["slappart0", "slappart1", "slappart2"]
    assert [p["user"]["name"] for p in partitions] == ["slapuser7", "slapuser8", "slapuser9"]
    assert [p["address_list"] for p in partitions] == [
        p["address_list"] for p in reference["partition_list"]
    ]
    assert [p["ipv6_range"] for p in partitions] == [
        p["ipv6_range"] for p in reference["partition_list"]
    ]
    for ours, theirs in zip(partitions, reference["partition_list"], strict=True):
        assert ours["tap"] == theirs["tap"]
        assert ours["tun"] == theirs["tun"]
    assert EnsureUser("slapuser7", Path(partitions[0]["path"]), "slapuser7", ("slapsoft",)) in [
        step for step in result.steps if isinstance(step, EnsureUser)
    ]
    # the computer keeps its address and networks
    definition = result.definition
    assert (definition["address"], definition["netmask"]) == (
        "2001:db8:42::1",
        reference["netmask"],
    )
    assert definition["interface"]["ipv4_local_network"] == "10.0.0.0/16"
    assert any("migrating the reference's description" in note for note in result.notes)
    assert not [note for note in result.notes if "stored address not in" in note]


def test_a_second_run_keeps_what_the_first_kept(reference: dict[str, Any]) -> None:
    first = plan(reference).definition
    assert not from_reference(first)
    second = plan(first, amount=4)
    assert second.definition["partition_list"][:3] == first["partition_list"]
    new = second.definition["partition_list"][3]
    taken = {a["addr"] for p in first["partition_list"] for a in p["address_list"]}
    assert not taken & {a["addr"] for a in new["address_list"]}
    assert new["address_list"][0]["addr"].startswith("10.0.")


def test_rootless_keeps_addresses_but_owns_the_partitions(reference: dict[str, Any]) -> None:
    partitions = plan(reference, ALICE).definition["partition_list"]
    assert {p["user"]["name"] for p in partitions} == {"alice"}
    assert partitions[2]["address_list"][0] == {"addr": "10.0.24.22", "netmask": "255.255.0.0"}


def test_a_broken_reference_xml_is_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "slapos.xml"
    shutil.copy(DATA / "slapos.xml", broken)
    broken.write_bytes(broken.read_bytes()[:200])
    with pytest.raises(FormatError, match="cannot read the reference's computer_xml"):
        load_previous(tmp_path / "absent.json", broken)


def test_the_stored_ipv6_network_is_the_computers(reference: dict[str, Any]) -> None:
    assert resolve_ipv6(config(3), reference) == IPv6Interface("2001:db8:42::1/64")


def test_the_account_of_a_rootless_format_never_becomes_a_partition_user() -> None:
    cfg = config(1, alter_user=False)
    rootless = plan_format(cfg, None, Host(ALICE, resolve_ipv6(cfg, None))).definition
    assert rootless["partition_list"][0]["user"]["name"] == "alice"
    users = [p["user"]["name"] for p in plan(rootless, amount=1).definition["partition_list"]]
    assert users == ["slapuser0"]
