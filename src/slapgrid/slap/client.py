"""SlapClient: one method per SLAP call a node, an instance or a user makes.

The computer id is bound at construction; partition-scoped POSTs carry the
`X-SlapPartition` header that the 1.26.1 proxy uses to know who is asking.

Each call's form is the reference client's, field for field and in its order, with the
same fields left out (docs/slap-calls.md): masters are tested against that client, so any
other form is one a master may read differently.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from slapgrid.slap import marshal
from slapgrid.slap.documents import Computer, ComputerPartition, SoftwareInstance
from slapgrid.slap.errors import NotFoundError, ProtocolError, SlapError
from slapgrid.slap.instance_trees import GET_PATH, LIST_PATH
from slapgrid.slap.transport import Transport

_HEADER_VALUE = re.compile(r"[\x21-\x2b\x2d-\x7e]+")
"""Printable ASCII without space or comma: what fits in the header's `key=value, …` list."""


def partition_auth_header(computer_id: str, partition_id: str) -> dict[str, str]:
    """`X-SlapPartition`, with only values that cannot break or extend the header."""
    for what, value in (("computer id", computer_id), ("partition id", partition_id)):
        if not _HEADER_VALUE.fullmatch(value):
            raise ProtocolError(f"refusing to send {what} {value!r} in an HTTP header")
    return {
        "Authorization": (
            f"X-SlapPartition computer_id={computer_id}, computer_partition_id={partition_id}"
        )
    }


class MasterAccess(Protocol):
    """How a configuration reaches the master: the node's, format's and a user's all say it."""

    @property
    def master_url(self) -> str: ...
    @property
    def computer_id(self) -> str: ...
    @property
    def key_file(self) -> Path | None: ...
    @property
    def cert_file(self) -> Path | None: ...
    @property
    def master_ca_file(self) -> Path | None: ...


class SlapClient:
    @classmethod
    def from_config(cls, config: MasterAccess) -> SlapClient:
        """The one place a configuration's certificate and CA become a client's."""
        return cls(
            config.master_url,
            config.computer_id,
            key_file=config.key_file,
            cert_file=config.cert_file,
            ca_file=config.master_ca_file,
        )

    def __init__(
        self,
        master_url: str,
        computer_id: str,
        *,
        key_file: Path | str | None = None,
        cert_file: Path | str | None = None,
        ca_file: Path | str | None = None,
        timeout: float = 60.0,
    ) -> None:
        if not computer_id:
            raise SlapError("a computer id is needed to talk to the master")
        self.computer_id = computer_id
        self.transport = Transport(
            master_url, key_file=key_file, cert_file=cert_file, ca_file=ca_file, timeout=timeout
        )

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> SlapClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- plumbing ------------------------------------------------------------------

    def _get_document(self, method: str, params: Mapping[str, str]) -> Any:
        return marshal.loads(self.transport.get(method, params))

    def _post_partition(self, method: str, partition_id: str, **data: str | None) -> bytes:
        """The partition's ids first, then `data` in order, as the reference's forms are."""
        form = {"computer_id": self.computer_id, "computer_partition_id": partition_id, **data}
        headers = partition_auth_header(self.computer_id, partition_id)
        return self.transport.post(method, form, headers=headers)

    def _post_release(self, method: str, url: str, **data: str) -> bytes:
        """`url` before `computer_id`: the reference's SoftwareRelease puts them so."""
        return self.transport.post(method, {"url": url, "computer_id": self.computer_id, **data})

    # --- reading -------------------------------------------------------------------

    def computer(self) -> Computer:
        """The desired state of this computer: its partitions and software releases."""
        params = {"computer_id": self.computer_id}
        try:
            document = self._get_document("getFullComputerInformation", params)
        except NotFoundError:
            document = self._get_document("getComputerInformation", params)
        computer = Computer.from_wire(document)
        if computer.computer_id != self.computer_id:
            raise ProtocolError(
                f"asked for computer {self.computer_id}, master answered {computer.computer_id}"
            )
        return computer

    def register_partition(self, partition_id: str) -> ComputerPartition:
        document = self._get_document(
            "registerComputerPartition",
            {"computer_reference": self.computer_id, "computer_partition_reference": partition_id},
        )
        return ComputerPartition.from_wire(document)

    def partition_certificate(self, partition_id: str) -> tuple[str, str]:
        document = self._get_document(
            "getComputerPartitionCertificate",
            {"computer_id": self.computer_id, "computer_partition_id": partition_id},
        )
        if not isinstance(document, dict):
            raise ProtocolError("partition certificate answer is not a dictionary")
        certificate, key = document.get("certificate", ""), document.get("key", "")
        if not isinstance(certificate, str) or not isinstance(key, str):
            raise ProtocolError("partition certificate and key must be strings")
        return certificate, key

    # --- software release reports ----------------------------------------------------

    def building_software_release(self, url: str) -> None:
        self._post_release("buildingSoftwareRelease", url)

    def available_software_release(self, url: str) -> None:
        self._post_release("availableSoftwareRelease", url)

    def destroyed_software_release(self, url: str) -> None:
        self._post_release("destroyedSoftwareRelease", url)

    def software_release_error(self, url: str, log: str) -> None:
        self._post_release("softwareReleaseError", url, error_log=log)

    # --- partition reports -----------------------------------------------------------

    def started(self, partition_id: str) -> None:
        self._post_partition("startedComputerPartition", partition_id)

    def stopped(self, partition_id: str) -> None:
        self._post_partition("stoppedComputerPartition", partition_id)

    def destroyed(self, partition_id: str) -> None:
        self._post_partition("destroyedComputerPartition", partition_id)

    def instance_error(
        self, partition_id: str, log: str, slave_reference: str | None = None
    ) -> None:
        """`slave_reference` only for a shared instance: the reference leaves it out."""
        self._post_partition(
            "softwareInstanceError", partition_id, error_log=log, **_shared(slave_reference)
        )

    def bang(self, partition_id: str, message: str) -> None:
        self._post_partition("softwareInstanceBang", partition_id, message=message)

    def rename(self, partition_id: str, new_name: str, slave_reference: str | None = None) -> None:
        """`slave_reference` only for a shared instance, as `instance_error`."""
        self._post_partition(
            "softwareInstanceRename", partition_id, new_name=new_name, **_shared(slave_reference)
        )

    def set_connection(
        self,
        partition_id: str,
        parameters: Mapping[str, Any],
        slave_reference: str | None = None,
    ) -> None:
        """`slave_reference` always: the literal `None` for the partition's own instance."""
        self._post_partition(
            "setComputerPartitionConnectionXml",
            partition_id,
            connection_xml=_marshalled(dict(parameters)),
            slave_reference=slave_reference,
        )

    def update_related_instances(self, partition_id: str, references: Sequence[str]) -> None:
        self._post_partition(
            "updateComputerPartitionRelatedInstanceList",
            partition_id,
            instance_reference_xml=_marshalled(list(references)),
        )

    # --- requests --------------------------------------------------------------------

    def request(
        self,
        software_release: str,
        reference: str,
        *,
        software_type: str = "default",
        parameters: Mapping[str, Any] | None = None,
        filter: Mapping[str, Any] | None = None,
        state: str | None = None,
        shared: bool = False,
        requester: str | None = None,
    ) -> SoftwareInstance:
        """Ask for an instance; `requester` is the partition asking (None for a user).

        Raises `ResourceNotReady` while the master has not allocated it yet.
        """
        encoded = {
            "partition_parameter_xml": _marshalled(dict(parameters or {})),
            "filter_xml": _marshalled(dict(filter or {})),
            "state": _marshalled(state),
            "shared_xml": _marshalled(bool(shared)),
        }
        if requester is None:  # the reference's OpenOrder orders its form so
            form = {
                "software_release": software_release,
                "partition_reference": reference,
                "partition_parameter_xml": encoded["partition_parameter_xml"],
                "filter_xml": encoded["filter_xml"],
                "software_type": software_type,
                "state": encoded["state"],
                "shared_xml": encoded["shared_xml"],
            }
            body = self.transport.post("requestComputerPartition", form)
        else:  # and its ComputerPartition so
            body = self._post_partition(
                "requestComputerPartition",
                requester,
                software_release=software_release,
                software_type=software_type,
                partition_reference=reference,
                shared_xml=encoded["shared_xml"],
                partition_parameter_xml=encoded["partition_parameter_xml"],
                filter_xml=encoded["filter_xml"],
                state=encoded["state"],
            )
        return SoftwareInstance.from_wire(marshal.loads(body))

    # --- what users read back (the jIO API of the reference proxy) -----------------------

    def instance_trees(self) -> list[dict[str, Any]]:
        """The user's instance trees: titles at least; our master sends whole documents."""
        answer = self.transport.post_json(LIST_PATH, {})
        rows = answer.get("result_list") if isinstance(answer, dict) else None
        if not isinstance(rows, list) or not all(
            isinstance(row, dict) and isinstance(row.get("title"), str) for row in rows
        ):
            raise ProtocolError(f"{LIST_PATH}: no list of titled instance trees")
        return rows

    def instance_tree(self, title: str) -> dict[str, Any]:
        """One instance tree's root: software release, state, parameters, connection."""
        answer = self.transport.post_json(GET_PATH, {"title": title})
        if not isinstance(answer, dict) or not isinstance(answer.get("title"), str):
            raise ProtocolError(f"{GET_PATH}: not an instance tree document")
        return answer

    # --- computer-level ----------------------------------------------------------------

    def supply(self, url: str, computer_id: str | None = None, state: str = "available") -> None:
        self.transport.post(
            "supplySupply",
            {"url": url, "computer_id": computer_id or self.computer_id, "state": state},
        )

    def use_computer(self, tioxml: str) -> None:
        """An empty journal is not sent at all, as the reference's `reportUsage`."""
        if tioxml == "":
            return
        self.transport.post("useComputer", {"computer_id": self.computer_id, "use_string": tioxml})

    def computer_bang(self, message: str) -> None:
        self.transport.post("computerBang", {"computer_id": self.computer_id, "message": message})

    def load_computer_configuration(self, definition: Mapping[str, Any]) -> None:
        """Only `xml`: the computer is the definition's `reference`."""
        self.transport.post(
            "loadComputerConfigurationFromXML", {"xml": _marshalled(dict(definition))}
        )


def _marshalled(value: Any) -> str:
    """A value carried in a form field as an xml_marshaller document (pure ASCII)."""
    return marshal.dumps(value).decode("ascii")


def _shared(slave_reference: str | None) -> dict[str, str]:
    """The `slave_reference` field of a call about a shared instance, else no field at all."""
    return {"slave_reference": slave_reference} if slave_reference else {}
