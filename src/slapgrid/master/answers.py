"""What the master answers, rendered from rows: SLAP documents, request answers, statuses.

The transitions decide what is stored; this module decides how it looks to a node
(Computer, ComputerPartition), to a requester (the SoftwareInstance attributes), and to a
user (status dicts, the `slapgrid master show` snapshot). Nothing here writes.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from slapgrid.master import lookups
from slapgrid.master.inputs import InstanceRequest
from slapgrid.master.stamps import http_date, now_us
from slapgrid.master.tables import (
    BUSY,
    ComputerRow,
    PartitionRow,
    Reported,
    SharedRow,
    SoftwareRow,
)
from slapgrid.slap import instance_xml
from slapgrid.slap.documents import DESTROYED, Computer, ComputerPartition, SoftwareRelease

_MINUTE_US = 60_000_000


def ip_lists(
    addresses: list[Row[Any]],
) -> tuple[list[tuple[str, str]], list[tuple[str, str, str, str, str]]]:
    """(ip_list, full_ip_list): plain addresses, and routed tap addresses with a gateway."""
    ip_list = [(a.interface, a.address) for a in addresses if not a.gateway]
    full = [
        (a.interface, a.address, a.gateway, a.netmask, a.network) for a in addresses if a.gateway
    ]
    return ip_list, full


# --- requestComputerPartition ------------------------------------------------------------


def gone(request: InstanceRequest) -> dict[str, Any]:
    """The answer to destroying an instance that does not exist (any more)."""
    return {
        "_connection_dict": {},
        "_parameter_dict": {},
        "_requested_state": DESTROYED,
        "instance_title": request.title,
        "slap_computer_id": None,
        "slap_computer_partition_id": None,
        "slap_software_release_url": request.software_release,
        "slap_software_type": request.software_type,
    }


def instance_answer(session: Session, row: PartitionRow) -> dict[str, Any]:
    return _answer(row, row, lookups.addresses(session, [row.id])[row.id])


def shared_answer(session: Session, shared: SharedRow) -> dict[str, Any]:
    """A shared instance, with the computer, partition and addresses of its host."""
    return _answer(shared, *host_of(session, shared))


def host_of(session: Session, shared: SharedRow) -> tuple[PartitionRow | None, list[Row[Any]]]:
    """The partition hosting a shared instance (None before allocation), and its addresses."""
    host = session.get(PartitionRow, shared.host_id) if shared.host_id else None
    return host, lookups.addresses(session, [host.id])[host.id] if host else []


def _answer(
    instance: PartitionRow | SharedRow, host: PartitionRow | None, addresses: list[Row[Any]]
) -> dict[str, Any]:
    ip_list, full_ip_list = ip_lists(addresses)
    return {
        "_connection_dict": instance_xml.loads(instance.connection),
        "_filter_dict": instance_xml.loads(instance.filter),
        "_instance_guid": instance.guid,
        "_parameter_dict": instance_xml.loads(instance.parameters),
        "_requested_state": instance.requested_state,
        "full_ip_list": full_ip_list,
        "instance_title": instance.title,
        "ip_list": ip_list,
        "root_instance_title": instance.root_title,
        "slap_computer_id": host.computer if host else None,
        "slap_computer_partition_id": host.reference if host else None,
        "slap_software_release_url": instance.software_release,
        "slap_software_type": instance.software_type,
        "timestamp": instance.timestamp,
    }


# --- what nodes read ---------------------------------------------------------------------


def computer_document(session: lookups.Reader, computer: str) -> tuple[int, Computer]:
    """The getFullComputerInformation answer and the generation it reflects."""
    generation = lookups.generation(session, computer)
    partitions = lookups.partition_rows(session, computer)
    busy_ids = [p.id for p in partitions if p.slap_state == BUSY]
    addresses = lookups.addresses(session, busy_ids)
    shared = lookups.hosted(session, busy_ids)
    software = lookups.software_of(session, computer)
    document = Computer(
        computer_id=computer,
        partitions=[partition_document(p, addresses[p.id], shared[p.id]) for p in partitions],
        software_releases=[SoftwareRelease(s.url, computer, s.requested_state) for s in software],
    )
    return generation, document


def partition_document(
    row: PartitionRow | Row[Any], addresses: list[Row[Any]], hosted: list[Row[Any]]
) -> ComputerPartition:
    """A partition as its node reads it (`row`: the ORM object, or a plain row)."""
    if row.slap_state != BUSY:
        return ComputerPartition(row.computer, row.reference, DESTROYED, need_modification=0)
    ip_list, full_ip_list = ip_lists(addresses)
    slaves = [
        {
            **instance_xml.loads(shared.parameters),
            "slap_software_type": shared.software_type,
            "slave_reference": shared.guid,
            "slave_title": shared.title,
            "timestamp": shared.timestamp,
        }
        for shared in hosted
    ]
    parameters: dict[str, Any] = {
        **instance_xml.loads(row.parameters),
        "full_ip_list": full_ip_list,
        "instance_title": row.title,
        "ip_list": ip_list,
        "root_instance_title": row.requested_by or row.title or "",  # its root_title
        "slap_computer_id": row.computer,
        "slap_computer_partition_id": row.reference,
        "slap_software_release_url": row.software_release,
        "slap_software_type": row.software_type,
        "slave_instance_list": slaves,
        "timestamp": row.timestamp,
    }
    return ComputerPartition(
        computer_id=row.computer,
        partition_id=row.reference,
        requested_state=row.requested_state,
        software_release=SoftwareRelease(row.software_release or "", row.computer),
        parameters=parameters,
        connection=instance_xml.loads(row.connection),
        instance_guid=row.guid,
        access_status=row.status_text or f"#error no data found for {row.guid}",
        filter=instance_xml.loads(row.filter),
        need_modification=1,
    )


# --- what users read ---------------------------------------------------------------------


def status(row: Reported, reference: str, portal_type: str) -> dict[str, Any]:
    """The master's status dict: `no_data` when nothing was ever reported."""
    now = now_us()
    base = {"user": "SlapOS Master", "state": "", "reference": reference}
    base["portal_type"] = portal_type
    if not row.status_text:
        date = http_date(now)
        text = f"#error no data found for {reference}"
        return {**base, "created_at": date, "since": date, "text": text, "no_data": 1}
    age = now - (row.status_at or 0)
    return {
        **base,
        "created_at": http_date(row.status_at or now),
        "since": http_date(row.status_since or now),
        "text": row.status_text,
        "no_data_since_15_minutes": int(age > 15 * _MINUTE_US),
        "no_data_since_5_minutes": int(age > 5 * _MINUTE_US),
    }


def snapshot(session: Session) -> dict[str, list[dict[str, Any]]]:
    """Everything `slapgrid master show` prints, as plain data."""
    computers = list(session.scalars(select(ComputerRow).order_by(ComputerRow.reference)))
    partitions = list(
        session.scalars(select(PartitionRow).order_by(PartitionRow.computer, PartitionRow.id))
    )
    software = list(
        session.scalars(select(SoftwareRow).order_by(SoftwareRow.computer, SoftwareRow.id))
    )
    shared = list(session.scalars(select(SharedRow).order_by(SharedRow.id)))
    hosts = {p.id: p for p in partitions}
    return {
        "computers": [
            {
                "reference": c.reference,
                "address": c.address,
                "generation": c.generation,
                "partitions": sum(1 for p in partitions if p.computer == c.reference),
                "status": c.status_text,
            }
            for c in computers
        ],
        "partitions": [
            {
                "computer": p.computer,
                "partition": p.reference,
                "slap_state": p.slap_state,
                "title": p.title,
                "root": p.root_title if p.slap_state == BUSY else None,
                "requested_state": p.requested_state,
                "software_release": p.software_release,
                "software_type": p.software_type,
                "timestamp": p.timestamp,
                "status": p.status_text,
                "parameters": instance_xml.loads(p.parameters),
                "connection": instance_xml.loads(p.connection),
            }
            for p in partitions
        ],
        "software": [
            {
                "computer": s.computer,
                "url": s.url,
                "requested_state": s.requested_state,
                "status": s.status_text,
            }
            for s in software
        ],
        "shared": [
            {
                "guid": s.guid,
                "title": s.title,
                "root": s.root_title,
                "requested_state": s.requested_state,
                "software_release": s.software_release,
                "software_type": s.software_type,
                "host": (
                    f"{hosts[s.host_id].computer}/{hosts[s.host_id].reference}"
                    if s.host_id in hosts
                    else None
                ),
                "timestamp": s.timestamp,
                "status": s.status_text,
                "parameters": instance_xml.loads(s.parameters),
                "connection": instance_xml.loads(s.connection),
            }
            for s in shared
        ],
    }
