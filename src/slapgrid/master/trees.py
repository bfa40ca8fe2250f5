"""Instance trees as users read them back: the jIO API of the reference proxy.

A plain SLAP master can only be read back by requesting an instance again, which needs
the request's every argument. The reference proxy also answers two JSON calls,
`slapos.allDocs.v0.instance_tree_list` and `slapos.get.v0.instance_tree`; we answer the
same, so `slapgrid show` reads any instance requested by a user, by whatever tool. Our
list carries each tree's whole document, not only its title: one call for the listing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from slapgrid.master import lookups
from slapgrid.master.answers import host_of, ip_lists
from slapgrid.master.errors import NotFound
from slapgrid.master.tables import BUSY, PartitionRow, SharedRow
from slapgrid.slap import instance_xml


def _roots(row_type: Any, title: str | None, owner: str | None) -> Any:
    """Roots (instances no partition requested), of `owner` unless None (all of them)."""
    query = select(row_type).where(row_type.requested_by == "")
    if title is not None:
        query = query.where(row_type.title == title)
    if owner is not None:
        query = query.where(row_type.owner == owner)
    return query.order_by(row_type.id)


def root_partitions(
    session: Session, title: str | None = None, owner: str | None = None
) -> list[PartitionRow]:
    """Busy partitions a user (no partition) requested: the roots of instance trees."""
    query = _roots(PartitionRow, title, owner).where(PartitionRow.slap_state == BUSY)
    return list(session.scalars(query))


def root_shared(
    session: Session, title: str | None = None, owner: str | None = None
) -> list[SharedRow]:
    return list(session.scalars(_roots(SharedRow, title, owner)))


def tree_list(session: Session, owner: str | None = None) -> list[dict[str, Any]]:
    """Every instance tree (of `owner`), each as `tree_document` shows it."""
    partitions = root_partitions(session, owner=owner)
    addresses = lookups.addresses(session, [row.id for row in partitions])
    listed = [_document(row, row, addresses[row.id]) for row in partitions]
    shared = root_shared(session, owner=owner)
    return listed + [_shared_document(session, row) for row in shared]


def tree_document(session: Session, title: str, owner: str | None = None) -> dict[str, Any]:
    """The root instance titled `title` (of `owner`), in the reference proxy's shape."""
    for row in root_partitions(session, title, owner):
        return _document(row, row, lookups.addresses(session, [row.id])[row.id])
    for shared in root_shared(session, title, owner):
        return _shared_document(session, shared)
    raise NotFound(f"no instance tree {title!r}")


def _shared_document(session: Session, shared: SharedRow) -> dict[str, Any]:
    return _document(shared, *host_of(session, shared))


def _document(
    instance: PartitionRow | SharedRow, host: PartitionRow | None, addresses: list[Any]
) -> dict[str, Any]:
    ip_list, full_ip_list = ip_lists(addresses)
    return {
        "title": instance.title or "",
        "instance_guid": instance.guid or "",
        "software_release_uri": instance.software_release or "",
        "software_type": instance.software_type or "",
        "state": instance.requested_state,
        "connection_parameters": instance_xml.loads(instance.connection),
        "parameters": instance_xml.loads(instance.parameters),
        "shared": isinstance(instance, SharedRow),
        "root_instance_title": instance.root_title,
        "ip_list": [list(pair) for pair in ip_list],
        "full_ip_list": [list(entry) for entry in full_ip_list],
        "sla_parameters": instance_xml.loads(instance.filter),
        "computer_guid": host.computer if host else "",
        "compute_partition_id": host.reference if host else "",
        "processing_timestamp": instance.timestamp,
        "access_status_message": (instance.status_text or "") if host else "",
    }
