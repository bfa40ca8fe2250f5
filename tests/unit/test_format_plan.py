"""`slapgrid format` decisions: configuration, address arithmetic and the pure planner."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from ipaddress import IPv4Network, IPv6Interface, IPv6Network, ip_address, ip_network
from pathlib import Path

import pytest

from slapgrid.errors import ConfigError
from slapgrid.node.format.addresses import (
    DEFAULT_IPV4_NETWORK,
    check_prefix_shift,
    nth_host,
    partition_range,
    tap_range,
    ula_network,
)
from slapgrid.node.format.config import FormatConfig, load_format_config
from slapgrid.node.format.host import Host, resolve_ipv6
from slapgrid.node.format.plan import plan_format
from slapgrid.node.format.run import load_previous
from slapgrid.node.format.steps import (
    EnsureAddress,
    EnsureDirectory,
    EnsureFile,
    EnsureGroup,
    EnsureRoute,
    EnsureTap,
    EnsureUser,
    FormatError,
    Step,
    missing_tools,
)
from slapgrid.node.identity import Identity
from slapgrid.node.instance.partition import check_partition
from slapgrid.slap import marshal

IR, SR = Path("/srv/slapgrid/instance"), Path("/srv/slapgrid/software")
ALICE = Host(Identity("alice", 1000, 1000, "/bin/bash"), IPv6Interface("2001:db8::1/64"))
ROOT = Host(Identity("root", 0, 0, "/bin/bash"), IPv6Interface("2001:db8::1/64"))


def config(amount: int = 3, **changes: object) -> FormatConfig:
    base = FormatConfig(
        master_url="http://127.0.0.1:1/",
        computer_id="COMP-1",
        instance_root=IR,
        software_root=SR,
        partition_amount=amount,
        computer_json=IR / ".slapgrid" / "computer.json",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def addresses(partition: dict) -> list[str]:
    return [entry["addr"] for entry in partition["address_list"]]


# --- address arithmetic --------------------------------------------------------------------


def test_ula_is_a_stable_private_64_per_computer() -> None:
    network = ula_network("COMP-1")
    assert network == ula_network("COMP-1") != ula_network("COMP-2")
    assert network.prefixlen == 64
    assert network.subnet_of(IPv6Network("fd00::/8"))


@pytest.mark.parametrize(
    ("network", "index", "taken", "expected"),
    [
        ("127.1.0.0/16", 0, [], "127.1.0.2"),
        ("127.1.0.0/16", 5, [], "127.1.0.7"),
        ("127.1.0.0/16", 0, ["127.1.0.2", "127.1.0.3"], "127.1.0.4"),
        ("10.0.0.0/30", 0, [], "10.0.0.2"),  # .3 is the broadcast address
        ("10.0.0.0/29", 4, [], "10.0.0.6"),
        ("10.0.0.0/29", 5, [], "10.0.0.2"),  # wraps around inside the network
        ("2001:db8::/64", 0, [], "2001:db8::2"),
        ("2001:db8::/64", 1, ["2001:db8::3"], "2001:db8::4"),
    ],
)
def test_nth_host(network: str, index: int, taken: list[str], expected: str) -> None:
    assert str(nth_host(ip_network(network), index, {ip_address(a) for a in taken})) == expected


def test_nth_host_refuses_a_full_network() -> None:
    with pytest.raises(ConfigError, match="too small"):
        nth_host(IPv4Network("10.0.0.0/31"), 0, set())
    with pytest.raises(ConfigError, match="no free address"):
        nth_host(IPv4Network("10.0.0.0/30"), 0, {ip_address("10.0.0.2")})


def test_ranges_match_the_reference_layout() -> None:
    network = IPv6Network("2001:db8::/64")
    assert partition_range(network, 0, 16) == IPv6Network("2001:db8:0:0:4001::/80")
    assert partition_range(network, 9, 16) == IPv6Network("2001:db8:0:0:400a::/80")
    tap = tap_range(network, 0, 16)
    assert tap == IPv6Network("2001:db8:0:0:8001::/80")
    assert str(tap.broadcast_address) == "2001:db8::8001:ffff:ffff:ffff"


@pytest.mark.parametrize(
    ("prefix", "shift", "amount", "message"),
    [
        ("2001:db8::/64", 4, 4, "at most 3 partitions"),
        ("2001:db8::/120", 8, 1, "does not fit"),
        ("2001:db8::/64", 1, 0, "does not fit"),
    ],
)
def test_prefix_shift_must_leave_room(prefix: str, shift: int, amount: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_prefix_shift(IPv6Network(prefix), shift, amount)


# --- planner ---------------------------------------------------------------------------


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


# --- configuration ---------------------------------------------------------------------


def write_cfg(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "slapos.cfg"
    path.write_text(text)
    return path


def test_slapos_overrides_slapformat_and_flags_override_both(tmp_path: Path) -> None:
    path = write_cfg(
        tmp_path,
        "[slapformat]\npartition_amount = 3\npartition_base_name = part\n"
        "ipv4_local_network = 10.1.0.0/16\nalter_network = false\n"
        "computer_xml = /ignored.xml\n"
        "[slapos]\npartition_amount = 5\nmaster_url = http://127.0.0.1:5000\n"
        "computer_id = COMP-9\ninstance_root = /srv/i\nsoftware_root = /srv/s\n",
    )
    loaded = load_format_config(path, {"partition_amount": None})
    assert loaded.partition_amount == 5
    assert loaded.partition_base_name == "part"
    assert loaded.user_base_name == "slapuser"
    assert loaded.ipv4_local_network == IPv4Network("10.1.0.0/16")
    assert loaded.computer_json == Path("/srv/i/.slapgrid/computer.json")
    assert (loaded.alter_user, loaded.alter_network, loaded.create_tap) == (None, False, None)
    flagged = load_format_config(path, {"partition_amount": 7, "alter_user": False})
    assert (flagged.partition_amount, flagged.alter_user) == (7, False)


def test_defaults_without_a_file() -> None:
    loaded = load_format_config(
        None,
        {
            "master_url": "http://127.0.0.1:5000",
            "computer_id": "C",
            "instance_root": "/srv/i",
            "software_root": "/srv/s",
            "partition_amount": 2,
            "interface_name": "eth0",
        },
    )
    assert loaded.ipv4_local_network == DEFAULT_IPV4_NETWORK
    assert loaded.ipv6_prefix is None
    assert loaded.ipv6_interface == "eth0"  # follows interface_name
    assert (loaded.software_user, loaded.tap_base_name) == ("slapsoft", "slaptap")


BASE = (
    "[slapos]\nmaster_url = http://127.0.0.1:5000\ncomputer_id = C\n"
    "instance_root = /srv/i\nsoftware_root = /srv/s\n"
)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("", "partition_amount.*--partition-amount"),
        ("partition_amount = many\n", "'partition_amount' must be a whole number"),
        ("partition_amount = -1\n", "must not be negative"),
        ("partition_amount = 1\nalter_user = maybe\n", "'alter_user' must be true or false"),
        ("partition_amount = 1\nipv4_local_network = 10.0.0.1/16\n", "host bits set"),
        ("partition_amount = 1\nipv4_local_network = fd00::/64\n", "must be an IPv4 network"),
        ("partition_amount = 1\nipv6_prefix = 10.0.0.0/8\n", "must be an IPv6 network"),
        ("partition_amount = 1\ninput_definition_file = /x\n", "not supported.*input_def"),
        ("partition_amount = 1\ncreate_tun = true\n", "not supported.*create_tun"),
        ("partition_amount = 1\nuser_base_name = Bad User\n", "'user_base_name'"),
        ("partition_amount = 1\npartition_base_name = ../x\n", "'partition_base_name'"),
        ("partition_amount = 1\nkey_file = /nonexistent.key\n", "'key_file'.*does not exist"),
    ],
)
def test_config_errors_name_the_option(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_format_config(write_cfg(tmp_path, BASE + extra), {})


def test_bad_master_url_is_a_config_error() -> None:
    overrides = {
        "master_url": "ftp://x",
        "computer_id": "C",
        "instance_root": "/i",
        "software_root": "/s",
        "partition_amount": 1,
    }
    with pytest.raises(ConfigError, match="master_url"):
        load_format_config(None, overrides)


def test_ipv6_network_resolution() -> None:
    assert resolve_ipv6(config(1, ipv6_prefix=IPv6Network("2001:db8:5::/48")), None) == (
        IPv6Interface("2001:db8:5::1/48")
    )
    ula = ula_network("COMP-1")
    assert resolve_ipv6(config(1, ipv6_interface="eth0"), None) == IPv6Interface((ula[1], 64))
    # with alter_network the interface's own global address is used: lo has none
    with pytest.raises(ConfigError, match="'lo' has no global IPv6"):
        resolve_ipv6(config(1, alter_network=True, ipv6_interface="lo"), None)


# --- saved description and partition checks ------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot read"),
        ('{"partition_list": {}}', "invalid partition_list"),
        ('{"partition_list": [{"reference": "a"}, {"reference": "a"}]}', "invalid"),
        ('{"partition_list": [{"path": "/x"}]}', "invalid"),
        ('{"partition_list": [{"reference": "../etc"}]}', "invalid"),
        ('{"partition_list": [{"reference": "slappart0\\n"}]}', "invalid"),
    ],
)
def test_corrupt_saved_description_is_refused(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "computer.json"
    path.write_text(content)
    with pytest.raises(FormatError, match=message):
        load_previous(path)


def test_missing_saved_description_means_fresh(tmp_path: Path) -> None:
    assert load_previous(tmp_path / "computer.json") is None


def test_check_partition(tmp_path: Path) -> None:
    uid = os.geteuid()
    partition = tmp_path / "slappart0"
    assert check_partition(partition, uid) == [
        f"partition directory {partition} does not exist (run `slapgrid format`)"
    ]
    partition.write_text("")
    assert check_partition(partition, uid) == [f"{partition} is not a directory"]
    partition.unlink()
    partition.mkdir(mode=0o700)
    partition.chmod(0o755)
    assert check_partition(partition, uid) == [f"{partition} has mode 0755, expected 0750"]
    partition.chmod(0o750)
    assert check_partition(partition, uid) == []
    assert check_partition(partition, None) == []
    problems = check_partition(partition, uid + 4242)
    assert len(problems) == 1
    assert problems[0].startswith(f"{partition} belongs to ")
    assert f"expected uid {uid + 4242}" in problems[0]


def test_missing_tools_are_listed() -> None:
    class Exotic(Step):
        tools = ("slapgrid-no-such-tool", "sh")

    assert missing_tools([Exotic(), EnsureDirectory(IR, 0o755)]) == ["slapgrid-no-such-tool"]
