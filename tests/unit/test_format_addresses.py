"""`slapgrid format` address arithmetic: the computer's private network, hosts and ranges."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

import pytest

from slapgrid.errors import ConfigError
from slapgrid.node.format.addresses import (
    check_prefix_shift,
    nth_host,
    partition_range,
    tap_range,
    ula_network,
)


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
