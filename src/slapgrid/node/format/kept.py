"""What a stored partition keeps across format runs: its user, tap, tun and IPv6 range.

Its reference and addresses are kept by the planner itself. These helpers apply the same
rule to the rest: what was stored wins while it still fits the configuration (a name that
is a usable user name, a range or tap address inside the IPv6 network), so a node the
reference formatted keeps what it had, and a second run of ours changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from ipaddress import IPv6Network, ip_address, ip_network
from typing import Any

_USER = re.compile(r"[a-z_][a-z0-9_-]*")


def _inside(value: Any, network: IPv6Network) -> bool:
    try:
        return ip_network(str(value), strict=False).subnet_of(network)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def user_name(entry: Mapping[str, Any], default: str) -> str:
    """The stored partition user, so that its files stay its own.

    Only a user format made for the partition (in the software user's group, as both
    formats make them) is kept: a rootless format stores the account that ran it, and
    that account must never become a partition user.
    """
    stored = entry.get("user")
    if not isinstance(stored, dict) or not stored.get("additional_group_list"):
        return default
    name = stored.get("name")
    if isinstance(name, str) and name != "root" and _USER.fullmatch(name):
        return name
    return default


def ipv6_range(entry: Mapping[str, Any], computed: dict[str, Any], v6: IPv6Network) -> dict:
    """The stored range while it lies inside the partitions' IPv6 network."""
    stored = entry.get("ipv6_range")
    if not computed or not isinstance(stored, dict):
        return computed
    network = stored.get("network") or f"{stored.get('addr')}/{stored.get('prefixlen')}"
    if not _inside(network, v6):
        return computed
    subrange = ip_network(str(network), strict=False)
    return {
        "addr": str(subrange.network_address),
        "netmask": str(subrange.netmask),
        "network": str(subrange),
        "prefixlen": subrange.prefixlen,
    }


def tap(
    entry: Mapping[str, Any], computed: dict[str, Any], v6: IPv6Network, tap_ipv6: bool
) -> dict:
    """The stored tap's name and IPv4 routing; its IPv6 (tap_ipv6) while inside the network."""
    stored = entry.get("tap")
    if not isinstance(stored, dict) or not stored.get("name"):
        return computed
    result = {**computed, "name": str(stored["name"])}
    if stored.get("ipv4_addr"):
        result.update({k: str(v) for k, v in stored.items() if k.startswith("ipv4_")})
    if tap_ipv6 and _address_in(stored.get("ipv6_addr"), v6):
        result.update({k: str(v) for k, v in stored.items() if k.startswith("ipv6_")})
    return result


def tun(entry: Mapping[str, Any]) -> dict | None:
    """The stored tun description, kept as information: format creates no tun device."""
    stored = entry.get("tun")
    return dict(stored) if isinstance(stored, dict) and stored.get("name") else None


def _address_in(value: Any, network: IPv6Network) -> bool:
    try:
        return ip_address(str(value)) in network
    except ValueError:
        return False
