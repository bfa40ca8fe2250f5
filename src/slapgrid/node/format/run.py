"""`slapgrid format`: partition directories, users, addresses, and registration.

The computer description is planned by a pure function (`plan_format`) from the
configuration, the description saved by the previous run and facts about the host; thin
`Step` executors then compare each wanted state with the machine and change only what
differs, so a second run changes nothing.

Defaults differ from the reference where it is safer: the host network is never touched
unless `alter_network` is asked for (then `ip addr add`, `ip -6 route replace local
<range> dev lo` and, with `create_tap`, `ip tuntap add`); users and groups are only
created when running as root (`alter_user`); partition IPv4 addresses come from
127.1.0.0/16, usable without any set-up; IPv6 comes from `ipv6_prefix`, else (with
alter_network) the interface's global prefix, else a unique-local /64 derived from the
computer id. The description is saved as JSON (`computer_json`), not as XML.

The options are read in `format_config`, the host in `format_host`, and the steps are
applied in `format_steps`.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from pathlib import Path
from typing import Any

from slapgrid import __version__
from slapgrid.errors import SlapgridError
from slapgrid.node import layout
from slapgrid.node.format.addresses import check_prefix_shift, nth_host, partition_range, tap_range
from slapgrid.node.format.config import PARTITION_NAME, FormatConfig, load_format_config
from slapgrid.node.format.host import Host, os_type, resolve_ipv6
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
    missing_tools,
)
from slapgrid.node.identity import Identity, agent_identity
from slapgrid.node.instance.partition import PARTITION_MODE
from slapgrid.slap.client import SlapClient
from slapgrid.slap.errors import NotFoundError, SlapError

__all__ = [  # the command, and what it re-exports from format_config, _host and _steps
    "EnsureAddress",
    "EnsureDirectory",
    "EnsureFile",
    "EnsureGroup",
    "EnsureRoute",
    "EnsureTap",
    "EnsureUser",
    "FormatConfig",
    "FormatError",
    "FormatPlan",
    "Host",
    "Identity",
    "RegistrationError",
    "Step",
    "execute",
    "load_format_config",
    "load_previous",
    "missing_tools",
    "partition_usage",
    "plan_format",
    "register",
    "render_plan",
    "resolve_ipv6",
    "run_format",
]

log = logging.getLogger(__name__)

ROOT_MODE = 0o755


class RegistrationError(SlapgridError):
    """The machine is formatted but the master did not take its description (offline)."""

    exit_code = 2


# --- the plan ----------------------------------------------------------------------------


@dataclass
class FormatPlan:
    definition: dict[str, Any]  # what computer_json holds and the master receives
    steps: list[Step]
    notes: list[str] = field(default_factory=list)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, indent=2) + "\n"


def _stored_address(
    entry: Mapping[str, Any], network: IPv4Network | IPv6Network, taken: set[Any]
) -> IPv4Address | IPv6Address | None:
    """The partition's stored address inside `network`, unless another partition has it."""
    for item in entry.get("address_list") or []:
        try:
            address = ip_address(str(item.get("addr")))
        except (AttributeError, ValueError):
            continue
        if address in network and address not in taken:
            taken.add(address)
            return address
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

    v4, v6, shift = config.ipv4_local_network, host.ipv6.network, config.ipv6_prefixshift
    if config.partition_has_ipv6_range or (create_tap and config.tap_ipv6):
        check_prefix_shift(v6, shift, amount)
    taken: set[Any] = {host.ipv6.ip}
    kept = [(_stored_address(e, v4, taken), _stored_address(e, v6, taken)) for e in stored]
    notes = []
    if not alter_user:
        notes.append(
            f"rootless mode: partitions belong to {identity.name}; no user or group is created"
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
        kept4, kept6 = kept[index] if index < len(kept) else (None, None)
        address4 = kept4 or nth_host(v4, index, taken)
        address6 = kept6 or nth_host(v6, index, taken)
        taken.update((address4, address6))
        for old, new, network in ((kept4, address4, v4), (kept6, address6, v6)):
            if entry and old is None:
                notes.append(f"{reference}: stored address not in {network}, now {new}")
        user_name = f"{config.user_base_name}{index}" if alter_user else identity.name
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
                {"addr": str(address4), "netmask": "255.255.255.255"},
                {"addr": str(address6), "netmask": str(v6.netmask)},
            ],
            "ipv6_range": ipv6_range,
            "tap": _tap(config, v6, index, create_tap),
            "tun": None,
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


# --- running it --------------------------------------------------------------------------


def load_previous(path: Path) -> dict[str, Any] | None:
    """The description the last run saved, checked enough to never lose a partition."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"cannot read the saved computer description {path}: {exc}") from None
    partitions = document.get("partition_list") if isinstance(document, dict) else None
    references = [p.get("reference") for p in partitions or [] if isinstance(p, dict)]
    if (
        not isinstance(partitions, list)
        or len(references) != len(partitions)
        or not all(isinstance(r, str) and PARTITION_NAME.match(r) for r in references)
        or len(set(references)) != len(references)
    ):
        raise FormatError(f"the saved computer description {path} has an invalid partition_list")
    return document


def partition_usage(path: Path) -> list[str]:
    """What a partition directory holds besides its resource file: empty means free."""
    try:
        return sorted(name for name in os.listdir(path) if name != layout.RESOURCE_FILE)
    except (FileNotFoundError, NotADirectoryError):
        return []


def execute(steps: Sequence[Step], *, dry_run: bool = False) -> list[str]:
    """Apply every step in order; returns the changes made (or that would be made)."""
    changes = []
    for step in steps:
        try:
            done = step.apply(dry_run)
        except OSError as exc:
            raise FormatError(f"{exc.filename or step}: {exc.strerror or exc}") from None
        for change in done:
            if not dry_run:
                log.info("format: %s", change)
        changes += done
    return changes


def render_plan(plan: FormatPlan, changes: Sequence[str]) -> str:
    definition = plan.definition
    lines = [
        f"computer {definition['reference']}: {len(definition['partition_list'])} partition(s), "
        f"address {definition['address']}"
    ]
    for partition in definition["partition_list"]:
        addresses = " ".join(a["addr"] for a in partition["address_list"])
        ipv6_range = partition["ipv6_range"].get("network", "-")
        lines.append(
            f"  {partition['reference']}: user {partition['user']['name']}, {addresses}, "
            f"range {ipv6_range}"
        )
    lines += [f"note: {note}" for note in plan.notes]
    lines += [f"would {change}" for change in changes] or ["nothing to change"]
    return "\n".join(lines)


def register(config: FormatConfig, definition: Mapping[str, Any]) -> None:
    prefix = "could not register with the master"
    try:
        with SlapClient(
            config.master_url,
            config.computer_id,
            key_file=config.key_file,
            cert_file=config.cert_file,
            ca_file=config.master_ca_file,
        ) as client:
            client.load_computer_configuration(definition)
    except NotFoundError as exc:
        raise RegistrationError(
            f"{prefix}: it does not know computer {config.computer_id} ({exc})"
        ) from None
    except SlapError as exc:
        raise RegistrationError(f"{prefix}: {exc}") from None


def run_format(
    config_path: Path | None, overrides: Mapping[str, Any], *, dry_run: bool = False
) -> int:
    """`slapgrid format`: plan, apply what differs, register; 0, or raise a SlapgridError.

    A master failure raises `RegistrationError` (exit 2) after the machine is formatted.
    """
    config = load_format_config(config_path, overrides)
    previous = load_previous(config.computer_json)
    host = Host(
        agent_identity(),
        resolve_ipv6(config, previous),
        os_type=os_type(),
        python_version=platform.python_version(),
    )
    stored = (previous or {}).get("partition_list") or []
    busy = {
        entry["reference"]: partition_usage(config.instance_root / entry["reference"])
        for entry in stored[config.partition_amount :]
    }
    plan = plan_format(config, previous, host, busy=busy)
    if dry_run:
        print(render_plan(plan, execute(plan.steps, dry_run=True)))
        return 0
    for note in plan.notes:
        log.info("format: %s", note)
    missing = missing_tools(plan.steps)
    if missing:
        raise FormatError(f"missing system command(s): {', '.join(missing)}")
    if not execute(plan.steps):
        log.info("format: nothing to change")
    register(config, plan.definition)
    count = len(plan.definition["partition_list"])
    log.info("format: registered %d partition(s) with %s", count, config.master_url)
    return 0
