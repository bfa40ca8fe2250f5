"""Typed SLAP documents, converted from and to the wire's `SlapObject`s.

Reading is tolerant of the shapes both the production master and the reference proxy send
(integer or float-string timestamps, optional fields missing) and strict about types: a
field of the wrong type is a `ProtocolError`, never an AttributeError three calls later.
Writing produces the master's shape, so the reference client never needs a lazy re-fetch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from slapgrid.slap.errors import ProtocolError
from slapgrid.slap.marshal import SlapObject

T = TypeVar("T")

STARTED, STOPPED, DESTROYED, AVAILABLE = "started", "stopped", "destroyed", "available"
PARTITION_STATES = frozenset({STARTED, STOPPED, DESTROYED})
SOFTWARE_STATES = frozenset({AVAILABLE, DESTROYED})


def _expect_object(value: Any, cls: str) -> SlapObject:
    if not isinstance(value, SlapObject) or value.cls != cls:
        got = value.cls if isinstance(value, SlapObject) else type(value).__name__
        raise ProtocolError(f"expected a {cls} document, got {got}")
    return value


def _field(state: dict[str, Any], key: str, kind: type[T] | tuple[type, ...], cls: str) -> Any:
    value = state.get(key)
    if value is not None and not isinstance(value, kind):
        raise ProtocolError(f"{cls}.{key} should not be a {type(value).__name__}")
    return value


def _arg(obj: SlapObject, index: int) -> Any:
    return obj.args[index] if len(obj.args) > index else None


@dataclass
class SoftwareRelease:
    url: str
    computer_id: str | None = None
    requested_state: str | None = None

    @property
    def state(self) -> str:
        """The requested state; the reference defaults a missing one to `available`."""
        return self.requested_state or AVAILABLE

    @classmethod
    def from_wire(cls, value: Any) -> SoftwareRelease:
        obj = _expect_object(value, "SoftwareRelease")
        url = _field(obj.state, "_software_release", str, obj.cls) or _arg(obj, 0)
        if not isinstance(url, str) or not url:
            raise ProtocolError("SoftwareRelease without a URL")
        return cls(
            url=url,
            computer_id=_field(obj.state, "_computer_guid", str, obj.cls) or _arg(obj, 1),
            requested_state=_field(obj.state, "_requested_state", str, obj.cls),
        )

    def to_wire(self) -> SlapObject:
        state: dict[str, Any] = {
            "_computer_guid": self.computer_id,
            "_software_instance_list": [],
            "_software_release": self.url,
        }
        if self.requested_state is not None:
            state["_requested_state"] = self.requested_state
        return SlapObject("SoftwareRelease", (self.url, self.computer_id), state)


@dataclass
class ComputerPartition:
    computer_id: str
    partition_id: str
    requested_state: str = DESTROYED
    software_release: SoftwareRelease | None = None
    parameters: dict[str, Any] | None = None
    connection: dict[str, Any] | None = None
    instance_guid: str | None = None
    access_status: str | None = None
    filter: dict[str, Any] | None = None
    need_modification: int | None = None
    synced: bool | None = None

    @property
    def software_release_url(self) -> str | None:
        return self.software_release.url if self.software_release else None

    @property
    def is_free(self) -> bool:
        """Free = destroyed and no software release: nothing to do but keep it clean."""
        return self.requested_state == DESTROYED and self.software_release is None

    @property
    def timestamp(self) -> str | None:
        """The change marker, as the string the node stores in `.timestamp`."""
        value = (self.parameters or {}).get("timestamp")
        return None if value is None else str(value)

    @property
    def software_type(self) -> str | None:
        return (self.parameters or {}).get("slap_software_type")

    @property
    def instance_title(self) -> str | None:
        return (self.parameters or {}).get("instance_title")

    @property
    def slave_instance_list(self) -> list[dict[str, Any]]:
        return list((self.parameters or {}).get("slave_instance_list") or [])

    @property
    def ip_list(self) -> list[tuple[str, ...]]:
        return [tuple(entry) for entry in (self.parameters or {}).get("ip_list") or []]

    @classmethod
    def from_wire(cls, value: Any) -> ComputerPartition:
        obj = _expect_object(value, "ComputerPartition")
        state, name = obj.state, obj.cls
        computer_id = _field(state, "_computer_id", str, name) or _arg(obj, 0)
        partition_id = _field(state, "_partition_id", str, name) or _arg(obj, 1)
        if not isinstance(computer_id, str) or not isinstance(partition_id, str):
            raise ProtocolError("ComputerPartition without a computer id or a partition id")
        software = state.get("_software_release_document")
        requested_state = _field(state, "_requested_state", str, name) or DESTROYED
        return cls(
            computer_id=computer_id,
            partition_id=partition_id,
            requested_state=requested_state,
            software_release=None if software is None else SoftwareRelease.from_wire(software),
            parameters=_field(state, "_parameter_dict", dict, name),
            connection=_field(state, "_connection_dict", dict, name),
            instance_guid=_field(state, "_instance_guid", str, name),
            access_status=_field(state, "_access_status", str, name),
            filter=_field(state, "_filter_dict", dict, name),
            need_modification=_field(state, "_need_modification", int, name),
            synced=_field(state, "_synced", bool, name),
        )

    def to_wire(self) -> SlapObject:
        state: dict[str, Any] = {
            "_computer_id": self.computer_id,
            "_partition_id": self.partition_id,
            "_request_dict": None,
            "_requested_state": self.requested_state,
            "_software_release_document": (
                self.software_release.to_wire() if self.software_release else None
            ),
        }
        optional = {
            "_parameter_dict": self.parameters,
            "_connection_dict": self.connection,
            "_instance_guid": self.instance_guid,
            "_access_status": self.access_status,
            "_filter_dict": self.filter,
            "_need_modification": self.need_modification,
            "_synced": self.synced,
        }
        state.update({key: value for key, value in optional.items() if value is not None})
        return SlapObject("ComputerPartition", (self.computer_id, self.partition_id, None), state)


@dataclass
class Computer:
    computer_id: str
    partitions: list[ComputerPartition] = field(default_factory=list)
    software_releases: list[SoftwareRelease] = field(default_factory=list)

    @classmethod
    def from_wire(cls, value: Any) -> Computer:
        obj = _expect_object(value, "Computer")
        computer_id = _field(obj.state, "_computer_id", str, obj.cls) or _arg(obj, 0)
        if not isinstance(computer_id, str):
            raise ProtocolError("Computer without an id")
        partitions = _field(obj.state, "_computer_partition_list", list, obj.cls) or []
        softwares = _field(obj.state, "_software_release_list", list, obj.cls) or []
        return cls(
            computer_id=computer_id,
            partitions=[ComputerPartition.from_wire(item) for item in partitions],
            software_releases=[SoftwareRelease.from_wire(item) for item in softwares],
        )

    def to_wire(self) -> SlapObject:
        state = {
            "_computer_id": self.computer_id,
            "_computer_partition_list": [p.to_wire() for p in self.partitions],
            "_software_release_list": [s.to_wire() for s in self.software_releases],
        }
        return SlapObject("Computer", (self.computer_id,), state)


@dataclass
class SoftwareInstance:
    """The answer to a request: attributes vary between masters, so they stay a dict."""

    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def computer_id(self) -> str | None:
        return self.attributes.get("slap_computer_id")

    @property
    def partition_id(self) -> str | None:
        return self.attributes.get("slap_computer_partition_id")

    @property
    def instance_guid(self) -> str | None:
        return self.attributes.get("_instance_guid")

    @property
    def requested_state(self) -> str | None:
        return self.attributes.get("_requested_state")

    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self.attributes.get("_parameter_dict") or {})

    @property
    def connection(self) -> dict[str, Any]:
        return dict(self.attributes.get("_connection_dict") or {})

    @classmethod
    def from_wire(cls, value: Any) -> SoftwareInstance:
        if isinstance(value, SlapObject) and value.cls == "ComputerPartition":
            # the reference proxy answers some requests with a partition document
            return cls(dict(value.state))
        obj = _expect_object(value, "SoftwareInstance")
        for key in ("_parameter_dict", "_connection_dict"):
            _field(obj.state, key, dict, obj.cls)
        return cls(dict(obj.state))

    def to_wire(self) -> SlapObject:
        return SlapObject("SoftwareInstance", (), dict(self.attributes))
