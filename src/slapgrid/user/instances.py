"""Instances as a user sees them, read from the master, never from a local file.

The master is the only truth: an instance requested by another tool or on another machine
shows the same. `show` reads the jIO instance-tree calls (our master and the reference
proxy answer them); `request` shows what the master answered to the request.
"""

from __future__ import annotations

from typing import Any

from slapgrid.errors import SlapgridError
from slapgrid.slap.client import SlapClient
from slapgrid.slap.documents import SoftwareInstance
from slapgrid.slap.errors import HTTPStatusError, NotFoundError
from slapgrid.slap.instance_xml import unwrap_json

NOT_ALLOCATED = "not allocated yet"


def shown(document: dict[str, Any]) -> dict[str, Any]:
    """An `instance_tree` document as `show` prints it (table and --json alike)."""
    return {
        "name": document.get("title", ""),
        "state": document.get("state") or "",
        "software_release": document.get("software_release_uri") or "",
        "software_type": document.get("software_type") or "",
        "shared": bool(document.get("shared")),
        "computer": document.get("computer_guid") or None,
        "partition": document.get("compute_partition_id") or None,
        "parameters": unwrap_json(document.get("parameters") or {}),
        "connection": unwrap_json(document.get("connection_parameters") or {}),
    }


def answered(
    name: str,
    software_release: str,
    software_type: str,
    shared: bool,
    instance: SoftwareInstance | None,
) -> dict[str, Any]:
    """A request's answer in the same shape; None while the master has not allocated it."""
    if instance is None:
        state, computer, partition, parameters, connection = NOT_ALLOCATED, None, None, {}, {}
    else:
        state = instance.requested_state or ""
        computer, partition = instance.computer_id, instance.partition_id
        parameters, connection = instance.parameters, instance.connection
    return {
        "name": name,
        "state": state,
        "software_release": software_release,
        "software_type": software_type,
        "shared": shared,
        "computer": computer,
        "partition": partition,
        "parameters": unwrap_json(parameters),
        "connection": unwrap_json(connection),
    }


def list_instances(client: SlapClient) -> list[dict[str, Any]]:
    """Every instance the user requested, sorted by name; a title-only row is read in full."""
    try:
        rows = client.instance_trees()
    except NotFoundError:
        raise SlapgridError(
            f"{client.transport.base_url} does not list instances (no jIO instance_tree_list)"
        ) from None
    documents = [
        row if "software_release_uri" in row else _get(client, row["title"]) for row in rows
    ]
    return sorted((shown(d) for d in documents), key=lambda item: item["name"])


def show_instance(client: SlapClient, name: str) -> dict[str, Any]:
    return shown(_get(client, name))


def _get(client: SlapClient, name: str) -> dict[str, Any]:
    """The reference proxy answers 403 for an unknown title, ours 404."""
    try:
        return client.instance_tree(name)
    except HTTPStatusError as exc:
        if exc.status in (403, 404):
            raise SlapgridError(f"no instance {name!r} on {client.transport.base_url}") from None
        raise
