"""Facts about the host that `plan_format` needs: who runs format, and its IPv6 network.

Read here, once, so that the planner stays a pure function of its inputs and tests can hand
it any host they like.
"""

from __future__ import annotations

import json
import platform
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Interface, ip_address
from typing import Any

import psutil

from slapgrid.errors import ConfigError
from slapgrid.node.format.addresses import ula_network
from slapgrid.node.format.config import FormatConfig
from slapgrid.node.format.previous import computer_ipv6
from slapgrid.node.identity import Identity


@dataclass(frozen=True)
class Host:
    identity: Identity
    ipv6: IPv6Interface  # the computer's own address, within the partitions' IPv6 network
    os_type: str = ""
    python_version: str = ""


def os_type() -> str:
    """JSON of (platform, distribution id, version, name), as masters display it."""
    try:
        release = platform.freedesktop_os_release()
    except OSError:
        release = {}
    fields = [release.get(key, "") for key in ("ID", "VERSION_ID", "NAME")]
    return json.dumps([platform.platform(), *fields])


def _global_ipv6(interface: str) -> list[IPv6Interface]:
    found = []
    for entry in psutil.net_if_addrs().get(interface, []):
        if entry.family != socket.AF_INET6 or not entry.netmask:
            continue
        prefixlen = bin(int(IPv6Address(entry.netmask.split("/")[0]))).count("1")
        address = IPv6Interface((entry.address.split("%")[0], prefixlen))
        if not (address.is_link_local or address.is_loopback or address.is_multicast):
            found.append(address)
    return found


def resolve_ipv6(config: FormatConfig, previous: Mapping[str, Any] | None) -> IPv6Interface:
    """The computer's IPv6 and network: configured, else the interface's (alter_network),
    else the stored one, else a ULA.

    The interface is only consulted with alter_network: without it addresses are merely
    assigned, and a stable private prefix is the safer choice.
    """
    if config.ipv6_prefix is not None:
        return IPv6Interface((config.ipv6_prefix[1], config.ipv6_prefix.prefixlen))
    if not (config.alter_network and config.ipv6_interface):
        stored = computer_ipv6(previous)  # e.g. the reference's: its partitions keep theirs
        if stored is not None:
            return stored
        network = ula_network(config.computer_id)
        return IPv6Interface((network[1], network.prefixlen))
    candidates = _global_ipv6(config.ipv6_interface)
    if not candidates:
        raise ConfigError(
            f"interface {config.ipv6_interface!r} has no global IPv6 address: "
            "set ipv6_prefix or ipv6_interface"
        )
    stored = (previous or {}).get("address")
    try:
        preferred = ip_address(stored) if stored else None
    except ValueError:
        preferred = None
    containing = [a for a in candidates if preferred is not None and preferred in a.network]
    if containing:
        return min(containing, key=lambda a: a.ip)
    return min(candidates, key=lambda a: (a.network.prefixlen, a.ip))
