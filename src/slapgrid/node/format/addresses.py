"""Address arithmetic for `slapgrid format`: pure functions over `ipaddress` values.

Every address is a function of the partition's index, so a second format run recomputes
the same values; stored addresses still win while they stay inside the configured
networks (see `format.plan_format`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from typing import TypeVar

from slapgrid.errors import ConfigError

# Every 127/8 address is local on Linux: partitions can bind to theirs with no set-up, and
# no address of the LAN is ever shadowed. Hosts that want routable partition addresses set
# ipv4_local_network (e.g. 10.0.0.0/16) and run format with alter_network.
DEFAULT_IPV4_NETWORK = IPv4Network("127.1.0.0/16")
# Host part of partition i is i + FIRST_HOST; host part 1 is the computer's own address.
FIRST_HOST = 2
DEFAULT_PREFIX_SHIFT = 16

N = TypeVar("N", IPv4Network, IPv6Network)


def ula_network(seed: str) -> IPv6Network:
    """A unique-local /64 (RFC 4193) whose 40-bit global id is a hash of `seed`.

    Used when no IPv6 prefix is configured: stable for one computer id, different for
    another, and never routed outside the site.
    """
    global_id = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:5], "big")
    return IPv6Network(((0xFD << 120) | (global_id << 80), 64))


def parse_network(value: str, kind: type[N], option: str) -> N:
    """`10.0.0.0/16` → network; host bits or the wrong family are a ConfigError naming it."""
    try:
        network = ip_network(value.strip(), strict=True)
    except ValueError as exc:
        raise ConfigError(f"option '{option}': {exc}") from None
    if not isinstance(network, kind):
        version = 4 if kind is IPv4Network else 6
        raise ConfigError(f"option '{option}' must be an IPv{version} network, not {value!r}")
    return network


def nth_host(
    network: IPv4Network | IPv6Network, index: int, taken: Collection[IPv4Address | IPv6Address]
) -> IPv4Address | IPv6Address:
    """Partition `index`'s address: host `index + FIRST_HOST`, else the next free one after it.

    Scans forward (wrapping) so a collision with a stored address moves only the newcomer.
    """
    usable = network.num_addresses - FIRST_HOST - (1 if network.version == 4 else 0)
    if usable <= 0:
        raise ConfigError(f"network {network} is too small to hold partition addresses")
    for step in range(usable):
        address = network[FIRST_HOST + (index + step) % usable]
        if address not in taken:
            return address
    raise ConfigError(f"network {network} has no free address left for partition {index}")


def _subrange(network: IPv6Network, shift: int, value: int) -> IPv6Network:
    prefixlen = network.prefixlen + shift
    host_bits = 128 - prefixlen
    base = int(network.network_address) | (value << host_bits)
    return IPv6Network((base, prefixlen))


def check_prefix_shift(network: IPv6Network, shift: int, partition_amount: int) -> None:
    """Sub-ranges need room: 2**shift ≥ 4·partitions, and at least one host bit left."""
    if shift < 2 or network.prefixlen + shift >= 128:
        raise ConfigError(
            f"option 'ipv6_prefixshift': {shift} does not fit a /{network.prefixlen} "
            f"(need 2 ≤ shift < {128 - network.prefixlen})"
        )
    if partition_amount >= 1 << (shift - 2):
        raise ConfigError(
            f"option 'ipv6_prefixshift': {shift} bits give at most {(1 << (shift - 2)) - 1} "
            f"partitions, {partition_amount} requested"
        )


def partition_range(network: IPv6Network, index: int, shift: int) -> IPv6Network:
    """The routed sub-range of partition `index`: value 01…(index+1) in the `shift` bits.

    For 2001:db8::/64 and shift 16, partition 0 gets 2001:db8:0:0:4001::/80.
    """
    return _subrange(network, shift, (1 << (shift - 2)) + index + 1)


def tap_range(network: IPv6Network, index: int, shift: int) -> IPv6Network:
    """The sub-range routed to partition `index`'s tap: value 10…(index+1) in the shift bits."""
    return _subrange(network, shift, (2 << (shift - 2)) + index + 1)
