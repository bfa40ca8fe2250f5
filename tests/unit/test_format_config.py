"""`slapgrid format` configuration: the file, the flags, the errors that name the option and
the computer's IPv6 network."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Interface, IPv6Network
from pathlib import Path

import pytest

from slapgrid.errors import ConfigError
from slapgrid.node.format.addresses import ula_network
from slapgrid.node.format.config import load_format_config
from slapgrid.node.format.host import resolve_ipv6
from support.format_configs import config


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
    assert loaded.ipv4_local_network is None  # the stored description's, else the default
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
