"""The computer description the last format saved: ours, or the reference's.

On a node the reference formatted, `slapos node format` left its definition in
`computer_json` (JSON) and `computer_xml` (xml_marshaller): both hold the same dictionary
(`slapos.format.Computer.dump`). Ours has the same shape, so reading either lets the
planner keep the partitions, users and addresses found there instead of inventing new ones.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from ipaddress import IPv4Network, IPv6Interface, IPv6Network, ip_address
from pathlib import Path
from typing import Any

from slapgrid.node.format.config import PARTITION_NAME
from slapgrid.node.format.steps import FormatError
from slapgrid.slap import marshal
from slapgrid.slap.errors import ProtocolError

OURS = "slapgrid"  # how our descriptions' slapos_version starts


def load_previous(path: Path, reference_xml: Path | None = None) -> dict[str, Any] | None:
    """`path` (JSON), else the reference's `computer_xml`; checked never to lose a partition."""
    document, source = _read_json(path), path
    if document is None and reference_xml is not None:
        document, source = _read_xml(reference_xml), reference_xml
    if document is None:
        return None
    partitions = document.get("partition_list") if isinstance(document, dict) else None
    references = [p.get("reference") for p in partitions or [] if isinstance(p, dict)]
    if (
        not isinstance(partitions, list)
        or len(references) != len(partitions)
        or not all(isinstance(r, str) and PARTITION_NAME.fullmatch(r) for r in references)
        or len(set(references)) != len(references)
    ):
        raise FormatError(f"the saved computer description {source} has an invalid partition_list")
    return document


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"cannot read the saved computer description {path}: {exc}") from None


def _read_xml(path: Path) -> Any:
    try:
        return marshal.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ProtocolError) as exc:
        raise FormatError(f"cannot read the reference's computer_xml {path}: {exc}") from None


def from_reference(previous: Mapping[str, Any] | None) -> bool:
    """Whether `slapos node format` (not us) wrote the description: a migration."""
    if previous is None:
        return False
    return not str(previous.get("slapos_version") or "").startswith(OURS)


def ipv4_network(previous: Mapping[str, Any] | None) -> IPv4Network | None:
    """The IPv4 network the partitions' addresses came from (`interface.ipv4_local_network`)."""
    interface = (previous or {}).get("interface")
    value = interface.get("ipv4_local_network") if isinstance(interface, dict) else None
    try:
        return IPv4Network(str(value), strict=False) if value else None
    except ValueError:
        return None


def prefix_length(netmask: Any) -> int | None:
    """`ffff:ffff:ffff:ffff::` → 64, `255.255.0.0` → 16; None when it is no mask."""
    try:
        bits = bin(int(ip_address(str(netmask).split("/")[0])))[2:]
    except ValueError:
        return None
    return None if "01" in bits else bits.count("1")


def computer_ipv6(previous: Mapping[str, Any] | None) -> IPv6Interface | None:
    """The computer's stored IPv6 address and network, if it has them."""
    address, netmask = (previous or {}).get("address"), (previous or {}).get("netmask")
    length = prefix_length(netmask)
    try:
        interface = IPv6Interface(f"{address}/{length}") if address and length else None
    except ValueError:
        return None
    return interface if interface and isinstance(interface.network, IPv6Network) else None
