"""SlapClient: one method per SLAP call a node, an instance or a user makes.

The computer id is bound at construction; partition-scoped POSTs carry the
`X-SlapPartition` header that the 1.26.1 proxy uses to know who is asking.
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

    def _post(self, method: str, data: Mapping[str, str | None]) -> bytes:
        return self.transport.post(method, {"computer_id": self.computer_id, **data})

    def _post_partition(self, method: str, partition_id: str, **data: str | None) -> bytes:
        form = {"computer_id": self.computer_id, "computer_partition_id": partition_id, **data}
        headers = partition_auth_header(self.computer_id, partition_id)
        return self.transport.post(method, form, headers=headers)

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
        self._post("buildingSoftwareRelease", {"url": url})

    def available_software_release(self, url: str) -> None:
        self._post("availableSoftwareRelease", {"url": url})

    def destroyed_software_release(self, url: str) -> None:
        self._post("destroyedSoftwareRelease", {"url": url})

    def software_release_error(self, url: str, log: str) -> None:
        self._post("softwareReleaseError", {"url": url, "error_log": log})

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
        self._post_partition(
            "softwareInstanceError", partition_id, error_log=log, slave_reference=slave_reference
        )

    def bang(self, partition_id: str, message: str) -> None:
        self._post_partition("softwareInstanceBang", partition_id, message=message)

    def rename(self, partition_id: str, new_name: str, slave_reference: str | None = None) -> None:
        self._post_partition(
            "softwareInstanceRename",
            partition_id,
            new_name=new_name,
            slave_reference=slave_reference,
        )

    def set_connection(
        self,
        partition_id: str,
        parameters: Mapping[str, Any],
        slave_reference: str | None = None,
    ) -> None:
        self._post_partition(
            "setComputerPartitionConnectionXml",
            partition_id,
            connection_xml=marshal.dumps(dict(parameters)).decode("ascii"),
            slave_reference=slave_reference,
        )

    def update_related_instances(self, partition_id: str, references: Sequence[str]) -> None:
        self._post_partition(
            "updateComputerPartitionRelatedInstanceList",
            partition_id,
            instance_reference_xml=marshal.dumps(list(references)).decode("ascii"),
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
        form: dict[str, str | None] = {
            "software_release": software_release,
            "software_type": software_type,
            "partition_reference": reference,
            "partition_parameter_xml": marshal.dumps(dict(parameters or {})).decode("ascii"),
            "filter_xml": marshal.dumps(dict(filter or {})).decode("ascii"),
            "state": marshal.dumps(state).decode("ascii"),
            "shared_xml": marshal.dumps(bool(shared)).decode("ascii"),
        }
        if requester is None:
            body = self.transport.post("requestComputerPartition", form)
        else:
            body = self._post_partition("requestComputerPartition", requester, **form)
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
        self._post("useComputer", {"use_string": tioxml})

    def computer_bang(self, message: str) -> None:
        self._post("computerBang", {"message": message})

    def load_computer_configuration(self, definition: Mapping[str, Any]) -> None:
        self.transport.post(
            "loadComputerConfigurationFromXML", {"xml": marshal.dumps(dict(definition)).decode()}
        )
