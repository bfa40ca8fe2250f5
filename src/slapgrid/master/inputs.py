"""What callers hand the master, checked before any transaction starts.

Instance requests, `slapos format`'s computer definitions and usage journals come from the
network; each bad value becomes a one-line `BadRequest` here, so transitions only ever see
well-formed data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from slapgrid.master.errors import BadRequest
from slapgrid.master.tables import DEFAULT_SOFTWARE_TYPE
from slapgrid.slap import instance_xml, names, tioxml, urls
from slapgrid.slap.documents import DESTROYED, PARTITION_STATES, SOFTWARE_STATES
from slapgrid.slap.marshal import MAX_DOCUMENT_BYTES

AddressKey = tuple[str, str, str, str, str]  # interface, address, netmask, gateway, network
TEXT_LIMIT = 255
"""Characters a title, a software type or an address may have: what their columns hold.
PostgreSQL enforces it and SQLite would not: both refuse more here, alike."""


@dataclass(frozen=True)
class InstanceRequest:
    """One requestComputerPartition call, already unmarshalled."""

    software_release: str
    title: str
    software_type: str = DEFAULT_SOFTWARE_TYPE
    parameters: Mapping[str, Any] = field(default_factory=dict)
    filter: Mapping[str, Any] = field(default_factory=dict)
    state: str | None = None
    shared: bool = False
    requester: tuple[str, str] | None = None  # (computer, partition) of a requesting instance
    owner: str | None = None  # the user requesting a root; None: a trusted caller


def check_request(request: InstanceRequest) -> tuple[str, dict[str, Any]]:
    """Refuse a malformed request; → (its parameters as instance XML, its filter)."""
    check_software_release(request.software_release)
    check_title(request.title, "partition_reference")
    bounded(request.software_type, "software_type")
    if request.state is not None and request.state not in PARTITION_STATES:
        raise BadRequest(f"state must be started, stopped or destroyed, not {request.state!r}")
    parameters = as_xml(dict_param(request.parameters, "parameters"), "parameters")
    return parameters, dict_param(request.filter, "filter")


def check_title(title: str, what: str) -> None:
    if not title:
        raise BadRequest(f"{what} is empty")
    bounded(title, what)


def bounded(value: str, what: str) -> str:
    if len(value) > TEXT_LIMIT:
        raise BadRequest(f"{what} is longer than {TEXT_LIMIT} characters")
    return value


def check_software_release(url: str) -> None:
    """Refuse, at supply and request time, a URL every node would refuse to build."""
    try:
        urls.software_release_url(url)
    except urls.InvalidURL as exc:
        raise BadRequest(str(exc)) from None


def check_supply(url: str, state: str) -> None:
    """A supply; destroying a URL supplied before this rule existed stays possible."""
    if state not in SOFTWARE_STATES:
        raise BadRequest(f"supply state must be available or destroyed, not {state!r}")
    if state == DESTROYED and url:
        return
    check_software_release(url)


def dict_param(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise BadRequest(f"{what} must be a dictionary with string keys")
    return dict(value)


def as_xml(parameters: Mapping[str, Any], what: str) -> str:
    try:
        return instance_xml.dumps(parameters)
    except ValueError as exc:  # characters XML cannot carry
        raise BadRequest(f"{what}: {exc}") from None


def check_usage(document: str) -> None:
    """Refuse a TioXML usage journal that is not well-formed or not valid."""
    try:
        tioxml.parse_journal(document, "usage document", max_bytes=MAX_DOCUMENT_BYTES)
    except tioxml.InvalidUsage as exc:
        raise BadRequest(str(exc)) from None


def _text(value: Any, what: str, *, required: bool = False) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise BadRequest(f"{what} must be a non-empty string")
    return bounded(value, what)


def _name(rule: Callable[[object], str], value: Any, what: str) -> str:
    """A reference that becomes a name on the node, checked when it is registered."""
    try:
        return rule(value)
    except names.InvalidName as exc:
        raise BadRequest(f"{what} reference: {exc}") from None


# (computer, {partition: address keys}, address, netmask)
ComputerFormat = tuple[str, dict[str, list[AddressKey]], str | None, str | None]


def parse_format(definition: Any) -> ComputerFormat:
    """Validate `slapos format`'s dict → (computer, {partition: address keys}, addr, mask)."""
    if not isinstance(definition, Mapping):
        raise BadRequest("computer configuration must be a dictionary")
    reference = _name(names.computer_reference, definition.get("reference"), "computer")
    partitions = definition.get("partition_list")
    if not isinstance(partitions, list):
        raise BadRequest("computer configuration has no partition_list")
    result: dict[str, list[AddressKey]] = {}
    for entry in partitions:
        if not isinstance(entry, Mapping):
            raise BadRequest("each partition of partition_list must be a dictionary")
        name = _name(names.partition_reference, entry.get("reference"), "partition")
        tap = entry.get("tap") or {}
        if not isinstance(tap, Mapping):
            raise BadRequest(f"partition {name}: tap must be a dictionary")
        interface = _text(tap.get("name"), f"partition {name} tap name") or name
        keys: list[AddressKey] = []
        for address in entry.get("address_list") or []:
            if not isinstance(address, Mapping):
                raise BadRequest(f"partition {name}: address_list entries must be dictionaries")
            addr = _text(address.get("addr"), f"partition {name} address", required=True)
            netmask = _text(address.get("netmask"), f"partition {name} netmask")
            keys.append((interface, addr, netmask, "", ""))
        routed = _text(tap.get("ipv4_addr"), f"partition {name} tap ipv4_addr")
        if routed:
            keys.append(
                (
                    bounded(f"route_{interface}", f"partition {name} tap name"),
                    routed,
                    _text(tap.get("ipv4_netmask"), f"partition {name} tap ipv4_netmask"),
                    _text(tap.get("ipv4_gateway"), f"partition {name} tap ipv4_gateway"),
                    _text(tap.get("ipv4_network"), f"partition {name} tap ipv4_network"),
                )
            )
        if name in result:
            raise BadRequest(f"partition {name} appears twice in partition_list")
        result[name] = keys
    address = definition.get("address")
    netmask = definition.get("netmask")
    return (
        reference,
        result,
        bounded(address, "computer address") if isinstance(address, str) else None,
        bounded(netmask, "computer netmask") if isinstance(netmask, str) else None,
    )
