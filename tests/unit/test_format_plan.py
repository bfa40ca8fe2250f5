"""`slapgrid format` decisions: the pure planner, from the configuration and the saved
description to the steps and the description sent to the master."""

from __future__ import annotations

import json
from ipaddress import IPv4Network, IPv6Interface

import pytest

from slapgrid.node.format.host import Host
from slapgrid.node.format.plan import plan_format
from slapgrid.node.format.steps import (
    EnsureAddress,
    EnsureDirectory,
    EnsureFile,
    EnsureGroup,
    EnsureRoute,
    EnsureTap,
    EnsureUser,
    FormatError,
)
from slapgrid.node.identity import Identity
from slapgrid.slap import marshal
from support.format_configs import IR, SR, config

ALICE = Host(Identity("alice", 1000, 1000, "/bin/bash"), IPv6Interface("2001:db8::1/64"))
ROOT = Host(Identity("root", 0, 0, "/bin/bash"), IPv6Interface("2001:db8::1/64"))


def addresses(partition: dict) -> list[str]:
    return [entry["addr"] for entry in partition["address_list"]]


def test_fresh_rootless_plan() -> None:
    plan = plan_format(config(3), None, ALICE)
    definition = plan.definition
    assert definition["reference"] == "COMP-1"
    assert (definition["address"], definition["netmask"]) == (
        "2001:db8::1",
        "ffff:ffff:ffff:ffff::",
    )
    assert definition["software_user"] == "alice"
    partitions = definition["partition_list"]
    assert [p["reference"] for p in partitions] == ["slappart0", "slappart1", "slappart2"]
    first = partitions[0]
    assert first["path"] == str(IR / "slappart0")
    assert first["user"] == {
        "name": "alice",
        "shell": "/bin/bash",
        "path": str(IR / "slappart0"),
        "additional_group_list": [],
    }
    assert first["address_list"] == [
        {"addr": "127.1.0.2", "netmask": "255.255.255.255"},
        {"addr": "2001:db8::2", "netmask": "ffff:ffff:ffff:ffff::"},
    ]
    assert first["ipv6_range"] == {
        "addr": "2001:db8:0:0:4001::",
        "netmask": "ffff:ffff:ffff:ffff:ffff::",
        "network": "2001:db8:0:0:4001::/80",
        "prefixlen": 80,
    }
    assert first["tap"]["name"] == "slaptap0"
    assert {v for k, v in first["tap"].items() if k != "name"} == {""}
    assert (first["tun"], first["external_storage_list"]) == (None, [])
    assert addresses(partitions[2]) == ["127.1.0.4", "2001:db8::4"]
    # nothing needs root: no user, no group, no chown, no network
    assert not [s for s in plan.steps if isinstance(s, EnsureUser | EnsureGroup | EnsureAddress)]
    assert EnsureDirectory(IR / "slappart1", 0o750, None) in plan.steps
    assert EnsureDirectory(SR, 0o755, None) in plan.steps
    resource = EnsureFile(IR / "slappart1" / ".slapos-resource", "")
    written = [s for s in plan.steps if isinstance(s, EnsureFile) and s.path == resource.path]
    assert json.loads(written[0].content) == partitions[1]
    assert written[0].mode == 0o644
    assert plan.steps[-1] == EnsureFile(
        IR / ".slapgrid" / "computer.json", json.dumps(definition, sort_keys=True, indent=2) + "\n"
    )
    assert any("rootless" in note and "alice" in note for note in plan.notes)


def test_root_plan_creates_users_groups_and_owners() -> None:
    plan = plan_format(config(2), None, ROOT)
    part0 = IR / "slappart0"
    expected_order = [
        EnsureGroup("slapsoft"),
        EnsureUser("slapsoft", SR, "slapsoft"),
        EnsureDirectory(SR, 0o755, "slapsoft"),
        EnsureDirectory(IR, 0o755, None),
        EnsureGroup("slapuser0"),
        EnsureUser("slapuser0", part0, "slapuser0", ("slapsoft",)),
        EnsureDirectory(part0, 0o750, "slapuser0"),
    ]
    assert plan.steps[: len(expected_order)] == expected_order
    partition = plan.definition["partition_list"][0]
    assert partition["user"] == {
        "name": "slapuser0",
        "shell": "/bin/sh",
        "path": str(part0),
        "additional_group_list": ["slapsoft"],
    }
    assert plan.definition["software_user"] == "slapsoft"
    assert not plan.notes[:-1]  # only "adding 2 partition(s)", no rootless note
    # as root but with alter_user off: rootless again
    rootless = plan_format(config(2, alter_user=False), None, ROOT)
    assert rootless.definition["partition_list"][0]["user"]["name"] == "root"
    assert not [s for s in rootless.steps if isinstance(s, EnsureUser)]


@pytest.mark.parametrize(
    ("before", "after"),
    [(0, 3), (2, 4), (3, 3), (1, 1)],
    ids=["fresh", "grow", "same", "same-one"],
)
def test_existing_partitions_are_kept_exactly(before: int, after: int) -> None:
    previous = plan_format(config(before), None, ALICE).definition if before else None
    plan = plan_format(config(after), previous, ALICE)
    partitions = plan.definition["partition_list"]
    assert len(partitions) == after
    if previous is not None:
        assert partitions[:before] == previous["partition_list"]
    added = [n for n in plan.notes if n.startswith("adding")]
    assert added == ([f"adding {after - before} partition(s)"] if after > before else [])
    if before == after:
        assert plan.definition == previous  # a second run plans the very same description
    # every address is unique
    every = [a for p in partitions for a in addresses(p)] + [plan.definition["address"]]
    assert len(every) == len(set(every))


def test_shrinking_is_refused_naming_the_partitions() -> None:
    previous = plan_format(config(4), None, ALICE).definition
    busy = {"slappart2": [], "slappart3": [".timestamp", "software_release"]}
    with pytest.raises(FormatError) as caught:
        plan_format(config(2), previous, ALICE, busy=busy)
    message = str(caught.value)
    assert "partition_amount 2 is lower than the 4 partitions" in message
    assert "slappart2 (free)" in message
    assert "slappart3 (in use: .timestamp, software_release)" in message
    assert "slappart1" not in message


def _previous(*partitions: tuple[str, list[str]]) -> dict:
    return {
        "partition_list": [
            {"reference": ref, "address_list": [{"addr": a, "netmask": "x"} for a in addrs]}
            for ref, addrs in partitions
        ]
    }


@pytest.mark.parametrize(
    ("stored", "expected", "notes"),
    [
        # stored addresses inside the networks are kept, even unusual ones
        (
            [("slappart0", ["127.1.0.50", "2001:db8::50"])],
            [["127.1.0.50", "2001:db8::50"], ["127.1.0.3", "2001:db8::3"]],
            0,
        ),
        # a new partition never takes an address an old one keeps
        (
            [("slappart0", ["127.1.0.3", "2001:db8::3"])],
            [["127.1.0.3", "2001:db8::3"], ["127.1.0.4", "2001:db8::4"]],
            0,
        ),
        # addresses outside the configured networks are replaced, with a note each
        (
            [("slappart0", ["10.0.5.5", "2001:db9::2"])],
            [["127.1.0.2", "2001:db8::2"], ["127.1.0.3", "2001:db8::3"]],
            2,
        ),
        # two stored partitions claiming one address: the second one moves
        (
            [("slappart0", ["127.1.0.2"]), ("slappart1", ["127.1.0.2"])],
            [["127.1.0.2", "2001:db8::2"], ["127.1.0.3", "2001:db8::3"]],
            3,
        ),
        # the computer's own address is never given to a partition
        (
            [("slappart0", ["2001:db8::1"])],
            [["127.1.0.2", "2001:db8::2"], ["127.1.0.3", "2001:db8::3"]],
            2,
        ),
    ],
)
def test_addresses_are_stable(stored: list, expected: list, notes: int) -> None:
    plan = plan_format(config(2), _previous(*stored), ALICE)
    assert [addresses(p) for p in plan.definition["partition_list"]] == expected
    assert len([n for n in plan.notes if "stored address not in" in n]) == notes


def test_stored_references_survive_a_base_name_change() -> None:
    previous = _previous(("oldname0", ["127.1.0.2", "2001:db8::2"]))
    plan = plan_format(config(2, partition_base_name="new"), previous, ALICE)
    references = [p["reference"] for p in plan.definition["partition_list"]]
    assert references == ["oldname0", "new1"]
    assert plan.definition["partition_list"][0]["path"] == str(IR / "oldname0")


@pytest.mark.parametrize("option", ["alter_user", "alter_network"])
def test_privileged_options_need_root(option: str) -> None:
    with pytest.raises(FormatError, match=f"{option} needs root"):
        plan_format(config(1, **{option: True}), None, ALICE)


def test_alter_network_plans_addresses_routes_and_taps() -> None:
    cfg = config(
        1,
        alter_network=True,
        interface_name="eth0",
        ipv6_interface="eth1",
        ipv4_local_network=IPv4Network("10.0.0.0/16"),
    )
    plan = plan_format(cfg, None, ROOT)
    tap = plan.definition["partition_list"][0]["tap"]
    assert tap["ipv6_addr"] == "2001:db8::8001:ffff:ffff:ffff"
    assert tap["ipv6_gateway"] == "2001:db8::8001:0:0:1"
    assert tap["ipv6_network"] == "2001:db8::8001:0:0:1/80"
    network_steps = [
        s for s in plan.steps if isinstance(s, EnsureAddress | EnsureRoute | EnsureTap)
    ]
    assert network_steps == [
        EnsureAddress("eth1", "2001:db8::1/64"),
        EnsureAddress("eth0", "10.0.0.2/32"),
        EnsureAddress("eth1", "2001:db8::2/64"),
        EnsureRoute("2001:db8:0:0:4001::/80", "lo", local=True),
        EnsureTap("slaptap0", "slapuser0"),
        EnsureAddress("slaptap0", "2001:db8::8001:ffff:ffff:ffff/80"),
        EnsureRoute("2001:db8::8001:0:0:1", "slaptap0"),
        EnsureRoute("2001:db8::8001:0:0:1/80", "slaptap0", via="2001:db8::8001:0:0:1"),
    ]
    # loopback IPv4 is already local: never added; no tap unless asked
    quiet = plan_format(config(1, alter_network=True, create_tap=False), None, ROOT)
    steps = [s for s in quiet.steps if isinstance(s, EnsureAddress | EnsureTap)]
    assert steps == [EnsureAddress("lo", "2001:db8::1/64"), EnsureAddress("lo", "2001:db8::2/64")]


def test_without_alter_network_nothing_touches_the_network() -> None:
    plan = plan_format(config(2, create_tap=True), None, ROOT)
    assert not [s for s in plan.steps if isinstance(s, EnsureAddress | EnsureRoute | EnsureTap)]
    # taps asked for are still described to the master
    assert plan.definition["partition_list"][1]["tap"]["ipv6_addr"] == (
        "2001:db8::8002:ffff:ffff:ffff"
    )


def test_no_ipv6_range_when_disabled() -> None:
    plan = plan_format(config(1, partition_has_ipv6_range=False), None, ALICE)
    assert plan.definition["partition_list"][0]["ipv6_range"] == {}


def test_definition_survives_the_wire() -> None:
    definition = plan_format(config(3), None, ROOT).definition
    wire = marshal.dumps(definition)
    assert b"<reference" not in wire  # no shared sub-object: every value spelled out
    assert marshal.loads(wire) == definition
