"""The plan of `slapgrid format`: the computer description and the steps reaching it.

A pure function (`plan_format`) of the configuration, the description saved by the
previous run and facts about the host (`Host`): tests hand it any host, root or not.
Stored partitions keep their reference, user, addresses, tap and IPv6 range while these
stay inside the configured networks, so a second run plans nothing new, and a node the
reference formatted keeps what it had (`previous`, `kept`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Any

from slapgrid import __version__
from slapgrid.node import layout
from slapgrid.node.format import kept
from slapgrid.node.format.addresses import (
    DEFAULT_IPV4_NETWORK,
    check_prefix_shift,
    nth_host,
    partition_range,
    tap_range,
)
from slapgrid.node.format.config import FormatConfig
from slapgrid.node.format.host import Host
from slapgrid.node.format.previous import from_reference, ipv4_network, prefix_length
from slapgrid.node.format.steps import (
    SHELL,
    EnsureAddress,
    EnsureDirectory,
    EnsureFile,
    EnsureGroup,
    EnsureRoute,
    EnsureTap,
    EnsureUser,
    FormatError,
    Step,
)
from slapgrid.node.instance.partition import PARTITION_MODE

ROOT_MODE = 0o755


@dataclass
class FormatPlan:
    definition: dict[str, Any]  # what computer_json holds and the master receives
    steps: list[Step]
    notes: list[str] = field(default_factory=list)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, indent=2) + "\n"


def _stored_address(
    entry: Mapping[str, Any], network: IPv4Network | IPv6Network, taken: set[Any]
) -> tuple[IPv4Address | IPv6Address, str | None] | None:
    """The partition's stored address inside `network` and its netmask, unless another
    partition has it."""
    for item in entry.get("address_list") or []:
        try:
            address = ip_address(str(item.get("addr")))
        except (AttributeError, ValueError):
            continue
        if address in network and address not in taken:
            taken.add(address)
            netmask = str(item.get("netmask") or "")
            return address, netmask if prefix_length(netmask) is not None else None
    return None


def _shrink_message(amount: int, stored: Sequence[Mapping[str, Any]], busy: Mapping) -> str:
    vanishing = []
    for entry in stored[amount:]:
        reference = entry["reference"]
        contents = busy.get(reference)
        state = f"in use: {', '.join(contents[:3])}" if contents else "free"
        vanishing.append(f"{reference} ({state})")
    return (
        f"partition_amount {amount} is lower than the {len(stored)} partitions already "
        f"configured, and format never removes partitions: {', '.join(vanishing)} "
        "would disappear"
    )


def _tap(config: FormatConfig, network: IPv6Network, index: int, describe: bool) -> dict:
    tap = {
        key: ""
        for family in ("ipv4", "ipv6")
        for key in (f"{family}_addr", f"{family}_netmask", f"{family}_gateway", f"{family}_network")
    }
    tap["name"] = f"{config.tap_base_name}{index}"
    if describe and config.tap_ipv6:
        subrange = tap_range(network, index, config.ipv6_prefixshift)
        gateway = subrange[1]
        tap.update(
            ipv6_addr=str(subrange.broadcast_address),
            ipv6_netmask=str(subrange.netmask),
            ipv6_gateway=str(gateway),
            ipv6_network=f"{gateway}/{subrange.prefixlen}",
        )
    return tap


def plan_format(
    config: FormatConfig,
    previous: Mapping[str, Any] | None,
    host: Host,
    *,
    busy: Mapping[str, Sequence[str]] | None = None,
) -> FormatPlan:
    """The computer description and the steps reaching it; touches nothing.

    Stored partitions keep their reference and their addresses while these stay inside
    the configured networks; new partition i gets host i + 2 of each network. `busy` maps
    a stored partition to what its directory holds, to explain a refused shrink.
    """
    identity = host.identity
    alter_user = identity.is_root if config.alter_user is None else config.alter_user
    for wanted, option in ((alter_user, "alter_user"), (config.alter_network, "alter_network")):
        if wanted and not identity.is_root:
            flag = option.replace("_", "-")
            raise FormatError(f"{option} needs root: run as root, or without --{flag}")
    create_tap = config.alter_network if config.create_tap is None else config.create_tap
    stored = list((previous or {}).get("partition_list") or [])
    amount = config.partition_amount
    if amount < len(stored):
        raise FormatError(_shrink_message(amount, stored, busy or {}))

    v4 = config.ipv4_local_network or ipv4_network(previous) or DEFAULT_IPV4_NETWORK
    v6, shift = host.ipv6.network, config.ipv6_prefixshift
    if config.partition_has_ipv6_range or (create_tap and config.tap_ipv6):
        check_prefix_shift(v6, shift, amount)
    taken: set[Any] = {host.ipv6.ip}
    addresses = [(_stored_address(e, v4, taken), _stored_address(e, v6, taken)) for e in stored]
    notes = []
    if not alter_user:
        notes.append(
            f"rootless mode: partitions belong to {identity.name}; no user or group is created"
        )
    if from_reference(previous):
        notes.append(
            f"migrating the reference's description: {len(stored)} partition(s) keep their "
            "names, users, addresses and taps"
        )
    if amount > len(stored):
        notes.append(f"adding {amount - len(stored)} partition(s)")
    software_user = config.software_user if alter_user else identity.name

    steps: list[Step] = []
    if alter_user:
        steps += [
            EnsureGroup(software_user),
            EnsureUser(software_user, config.software_root, software_user),
        ]
    steps += [
        EnsureDirectory(config.software_root, ROOT_MODE, software_user if alter_user else None),
        EnsureDirectory(config.instance_root, ROOT_MODE),
    ]
    if config.alter_network:
        steps.append(EnsureAddress(config.ipv6_interface or "lo", str(host.ipv6)))

    partitions = []
    for index in range(amount):
        entry = stored[index] if index < len(stored) else {}
        reference = entry.get("reference") or f"{config.partition_base_name}{index}"
        path = config.instance_root / reference
        kept4, kept6 = addresses[index] if index < len(addresses) else (None, None)
        address4 = kept4[0] if kept4 else nth_host(v4, index, taken)
        address6 = kept6[0] if kept6 else nth_host(v6, index, taken)
        taken.update((address4, address6))
        for old, new, network in ((kept4, address4, v4), (kept6, address6, v6)):
            if entry and old is None:
                notes.append(f"{reference}: stored address not in {network}, now {new}")
        netmask4 = (kept4 and kept4[1]) or "255.255.255.255"
        netmask6 = (kept6 and kept6[1]) or str(v6.netmask)
        user_name = (
            kept.user_name(entry, f"{config.user_base_name}{index}")
            if alter_user
            else identity.name
        )
        ipv6_range: dict[str, Any] = {}
        if config.partition_has_ipv6_range:
            subrange = partition_range(v6, index, shift)
            ipv6_range = {
                "addr": str(subrange.network_address),
                "netmask": str(subrange.netmask),
                "network": str(subrange),
                "prefixlen": subrange.prefixlen,
            }
        partition = {
            "reference": reference,
            "path": str(path),
            "user": {
                "name": user_name,
                "shell": SHELL if alter_user else identity.shell,
                "path": str(path),
                "additional_group_list": [software_user] if alter_user else [],
            },
            "address_list": [
                {"addr": str(address4), "netmask": netmask4},
                {"addr": str(address6), "netmask": netmask6},
            ],
            "ipv6_range": kept.ipv6_range(entry, ipv6_range, v6),
            "tap": kept.tap(entry, _tap(config, v6, index, create_tap), v6, config.tap_ipv6),
            "tun": kept.tun(entry),
            "external_storage_list": [],
        }
        partitions.append(partition)
        if alter_user:
            steps += [
                EnsureGroup(user_name),
                EnsureUser(user_name, path, user_name, (software_user,)),
            ]
        steps += [
            EnsureDirectory(path, PARTITION_MODE, user_name if alter_user else None),
            EnsureFile(path / layout.RESOURCE_FILE, _json(partition)),
        ]
        if config.alter_network:
            steps += _network_steps(config, partition, address4, address6, v6, create_tap)

    definition = {
        "reference": config.computer_id,
        "address": str(host.ipv6.ip),
        "netmask": str(v6.netmask),
        "instance_root": str(config.instance_root),
        "software_root": str(config.software_root),
        "instance_storage_home": config.instance_storage_home,
        "software_user": software_user,
        "ipv6_interface": config.ipv6_interface,
        "partition_has_ipv6_range": config.partition_has_ipv6_range,
        "tap_gateway_interface": "",
        "tap_ipv6": config.tap_ipv6,
        "interface": {
            "name": config.interface_name,
            "ipv4_local_network": str(v4),
            "ipv6_interface": config.ipv6_interface,
            "ipv6_prefixshift": shift,
        },
        "public_ipv4_address": None,
        "os_type": host.os_type,
        "python_version": host.python_version,
        "slapos_version": f"slapgrid {__version__}",
        "partition_list": partitions,
    }
    steps.append(EnsureFile(config.computer_json, _json(definition)))
    return FormatPlan(definition, steps, notes)


def _network_steps(
    config: FormatConfig,
    partition: Mapping[str, Any],
    address4: Any,
    address6: Any,
    network: IPv6Network,
    create_tap: bool,
) -> list[Step]:
    """Host network changes for one partition (only planned with alter_network)."""
    steps: list[Step] = []
    if not address4.is_loopback:  # all of 127/8 is already local
        steps.append(EnsureAddress(config.interface_name or "lo", f"{address4}/32"))
    steps.append(EnsureAddress(config.ipv6_interface or "lo", f"{address6}/{network.prefixlen}"))
    if partition["ipv6_range"]:
        steps.append(EnsureRoute(partition["ipv6_range"]["network"], "lo", local=True))
    tap = partition["tap"]
    if create_tap:
        steps.append(EnsureTap(tap["name"], partition["user"]["name"]))
        if tap["ipv6_addr"]:
            prefixlen = tap["ipv6_network"].rsplit("/", 1)[1]
            steps += [
                EnsureAddress(tap["name"], f"{tap['ipv6_addr']}/{prefixlen}"),
                EnsureRoute(tap["ipv6_gateway"], tap["name"]),
                EnsureRoute(tap["ipv6_network"], tap["name"], via=tap["ipv6_gateway"]),
            ]
    return steps
