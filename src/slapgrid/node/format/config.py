"""The configuration of `slapgrid format`: `[slapformat]`, `[slapos]` and flags, validated.

Every mistake a user can make in these options becomes a one-line `ConfigError` here, so
the planner only ever sees a typed, complete `FormatConfig`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any

from slapgrid.errors import ConfigError
from slapgrid.node import layout
from slapgrid.node.config import (
    parse_bool,
    parse_int,
    parse_master_url,
    read_config_file,
    section,
)
from slapgrid.node.format.addresses import DEFAULT_PREFIX_SHIFT, parse_network

_NAME = re.compile(r"[a-z_][a-z0-9_-]*")  # fullmatch: no trailing "\n"
PARTITION_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_UNSUPPORTED = (
    "input_definition_file",
    "output_definition_file",
    "tap_gateway_interface",
    "bridge_name",
    "no_bridge",
)


@dataclass(frozen=True)
class FormatConfig:
    """`[slapformat]`, overridden by `[slapos]`, overridden by flags; `None` means automatic."""

    master_url: str
    computer_id: str
    instance_root: Path
    software_root: Path
    partition_amount: int
    computer_json: Path
    computer_xml: Path | None = None  # the reference's definition, read when migrating
    partition_base_name: str = "slappart"
    user_base_name: str = "slapuser"
    tap_base_name: str = "slaptap"
    software_user: str = "slapsoft"
    interface_name: str | None = None
    ipv6_interface: str | None = None
    # None: the network of the stored description's addresses, else DEFAULT_IPV4_NETWORK
    ipv4_local_network: IPv4Network | None = None
    ipv6_prefix: IPv6Network | None = None  # None: the interface's (alter_network) or a ULA
    ipv6_prefixshift: int = DEFAULT_PREFIX_SHIFT
    partition_has_ipv6_range: bool = True
    alter_user: bool | None = None  # None: only when running as root
    alter_network: bool = False
    create_tap: bool | None = None  # None: as alter_network
    tap_ipv6: bool = True
    instance_storage_home: str | None = None
    key_file: Path | None = None
    cert_file: Path | None = None
    master_ca_file: Path | None = None


def _optional_bool(values: Mapping[str, Any], name: str) -> bool | None:
    value = values.get(name)
    return None if value in (None, "") else parse_bool(value, name)


def _path(value: Any) -> Path:
    return Path(str(value)).expanduser().absolute()


def load_format_config(
    path: Path | None, overrides: Mapping[str, Any] | None = None
) -> FormatConfig:
    """Merge the sections and flags (`None` flags are "not given"), then validate."""
    parser = read_config_file(path) if path is not None else None
    values: dict[str, Any] = {**section(parser, "slapformat"), **section(parser, "slapos")}
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})

    required = ("master_url", "computer_id", "instance_root", "software_root", "partition_amount")
    missing = [name for name in required if values.get(name) in (None, "")]
    if missing:
        flags = ", ".join("--" + name.replace("_", "-") for name in missing)
        raise ConfigError(f"missing mandatory option(s) for format: {', '.join(missing)} ({flags})")
    unsupported = [name for name in _UNSUPPORTED if values.get(name) not in (None, "")]
    if parse_bool(values.get("create_tun", False), "create_tun"):
        unsupported.append("create_tun")
    if unsupported:
        raise ConfigError(f"option(s) not supported by slapgrid format: {', '.join(unsupported)}")

    amount = parse_int(values["partition_amount"], "partition_amount")
    if amount < 0:
        raise ConfigError(f"option 'partition_amount' must not be negative, not {amount}")
    names = {
        name: str(values.get(name) or default).strip()
        for name, default in (
            ("partition_base_name", "slappart"),
            ("user_base_name", "slapuser"),
            ("tap_base_name", "slaptap"),
            ("software_user", "slapsoft"),
        )
    }
    for name, value in names.items():
        pattern = PARTITION_NAME if name == "partition_base_name" else _NAME
        if not pattern.fullmatch(value):
            raise ConfigError(f"option '{name}': {value!r} is not a usable name")
    master_url = parse_master_url(str(values["master_url"]))

    def optional_file(name: str) -> Path | None:
        value = values.get(name)
        if value in (None, ""):
            return None
        file = _path(value)
        if not file.is_file():
            raise ConfigError(f"option '{name}': file {file} does not exist")
        return file

    key_file, cert_file = optional_file("key_file"), optional_file("cert_file")
    if (key_file is None) != (cert_file is None):
        raise ConfigError("options 'key_file' and 'cert_file' must be given together")
    instance_root = _path(values["instance_root"])
    interface_name = str(values.get("interface_name") or "").strip() or None
    ipv4 = values.get("ipv4_local_network")
    ipv6 = values.get("ipv6_prefix")
    return FormatConfig(
        master_url=master_url,
        computer_id=str(values["computer_id"]).strip(),
        instance_root=instance_root,
        software_root=_path(values["software_root"]),
        partition_amount=amount,
        computer_json=(
            _path(values["computer_json"])
            if values.get("computer_json")
            else layout.computer_definition(instance_root)
        ),
        interface_name=interface_name,
        ipv6_interface=str(values.get("ipv6_interface") or "").strip() or interface_name,
        computer_xml=_path(values["computer_xml"]) if values.get("computer_xml") else None,
        ipv4_local_network=(
            parse_network(str(ipv4), IPv4Network, "ipv4_local_network") if ipv4 else None
        ),
        ipv6_prefix=parse_network(str(ipv6), IPv6Network, "ipv6_prefix") if ipv6 else None,
        ipv6_prefixshift=parse_int(
            values.get("ipv6_prefixshift", DEFAULT_PREFIX_SHIFT), "ipv6_prefixshift"
        ),
        partition_has_ipv6_range=parse_bool(
            values.get("partition_has_ipv6_range", True), "partition_has_ipv6_range"
        ),
        alter_user=_optional_bool(values, "alter_user"),
        alter_network=_optional_bool(values, "alter_network") or False,
        create_tap=_optional_bool(values, "create_tap"),
        tap_ipv6=parse_bool(values.get("tap_ipv6", True), "tap_ipv6"),
        instance_storage_home=str(values.get("instance_storage_home") or "") or None,
        key_file=key_file,
        cert_file=cert_file,
        master_ca_file=optional_file("master_ca_file"),
        **names,
    )
