"""Instance requests (requestComputerPartition): allocating partitions, hosting shared ones.

The most involved transitions of the master, as functions of a write in progress (`Tx`):
which partition or host an instance gets, what an update changes, and which partitions
must be bumped so their nodes pick the change up.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from slapgrid.master import answers, lookups
from slapgrid.master.errors import BadRequest, Conflict, Forbidden, NotFound
from slapgrid.master.inputs import InstanceRequest, as_xml
from slapgrid.master.stamps import next_stamp
from slapgrid.master.tables import BUSY, DEFAULT_SOFTWARE_TYPE, PartitionRow, SharedRow
from slapgrid.master.transaction import Tx
from slapgrid.slap.documents import DESTROYED, STARTED, STOPPED

_STATE_STRENGTH = {STARTED: 0, STOPPED: 1, DESTROYED: 2}


@dataclass(frozen=True)
class _Wanted:
    """A checked request, with who asked (its tree's root title) and where it may go."""

    request: InstanceRequest
    parameters: str  # as XML
    sla: dict[str, Any]
    root_title: str  # "" for a root instance
    requester: PartitionRow | None
    computer: str | None  # the SLA's computer_guid, else the master's default

    def columns(self, state: str) -> dict[str, Any]:
        """The values of the columns partition and shared instances have in common."""
        return {
            "software_release": self.request.software_release,
            "software_type": self.request.software_type or DEFAULT_SOFTWARE_TYPE,
            "parameters": self.parameters,
            "filter": as_xml(self.sla, "filter"),
            "requested_state": state,
        }


def request(
    tx: Tx,
    request: InstanceRequest,
    parameters: str,
    sla: dict[str, Any],
    default_computer: str | None,
) -> dict[str, Any]:
    """Allocate or update an instance; the answer is the SoftwareInstance attributes."""
    requester = None
    if request.requester is not None:
        requester = lookups.busy_row(tx.session, *request.requester)
    wanted = _Wanted(
        request,
        parameters,
        sla,
        requester.root_title if requester is not None else "",
        requester,
        sla.get("computer_guid") or default_computer,
    )
    return _request_shared(tx, wanted) if request.shared else _request_partition(tx, wanted)


def _request_partition(tx: Tx, wanted: _Wanted) -> dict[str, Any]:
    """Allocate or update a partition instance; the answer is its SoftwareInstance dict."""
    session, request, root_title = tx.session, wanted.request, wanted.root_title
    state = request.state or STARTED
    if root_title:
        root = lookups.busy_titled(session, root_title, "")
        if root is not None:
            state = _stronger(state, root.requested_state)
    row = lookups.busy_titled(session, request.title, root_title)
    _check_owner(row, request)
    if row is None:
        if state == DESTROYED:
            return answers.gone(request)
        row = _allocate(session, wanted.computer, request.title)
        row.slap_state, row.title, row.requested_by = BUSY, request.title, root_title
        row.owner = None if root_title else request.owner
        row.guid = f"SOFTINST-{secrets.token_hex(6)}"
    changed = _assign(row, wanted.columns(state))
    requester = wanted.requester
    if requester is not None and (row.requester_computer, row.requester_partition) != (
        requester.computer,
        requester.reference,
    ):
        row.requester_computer, row.requester_partition = (
            requester.computer,
            requester.reference,
        )
    if changed:
        tx.bump(row)
    if changed.get("requested_state") == DESTROYED:
        mark_destroyed(tx, lookups.descendants(session, row))
    session.flush()
    return answers.instance_answer(session, row)


def _request_shared(tx: Tx, wanted: _Wanted) -> dict[str, Any]:
    """Host, update or drop a shared instance; the answer is its SoftwareInstance dict."""
    session, request, root_title = tx.session, wanted.request, wanted.root_title
    state = request.state or STARTED
    shared = lookups.shared_titled(session, request.title, root_title)
    _check_owner(shared, request)
    if state == DESTROYED:
        if shared is None:
            return answers.gone(request)
        answer = answers.shared_answer(session, shared)
        answer["_requested_state"] = DESTROYED
        drop_shared(tx, shared)
        return answer
    host = session.get(PartitionRow, shared.host_id) if shared and shared.host_id else None
    if host is None or not _can_host(host, request):
        host = _find_host(session, request, wanted.computer, wanted.sla)
    if shared is None:
        shared = SharedRow(
            guid=f"SHARED-{secrets.token_hex(6)}",
            title=request.title,
            requested_by=root_title,
            owner=None if root_title else request.owner,
            connection=None,
        )
        session.add(shared)
        previous_host, was_listed = None, False
    else:
        previous_host, was_listed = shared.host_id, shared.listed
    changed = _assign(shared, wanted.columns(state) | {"host_id": host.id})
    if wanted.requester is not None:
        shared.requester_computer = wanted.requester.computer
        shared.requester_partition = wanted.requester.reference
    if changed:
        bump_shared(tx, shared, previous_host, was_listed)
    session.flush()
    return answers.shared_answer(session, shared)


def _check_owner(row: PartitionRow | SharedRow | None, request: InstanceRequest) -> None:
    """A user changes only the roots it requested; a trusted caller (no owner) any."""
    if row is None or row.requested_by or request.owner is None or row.owner == request.owner:
        return
    raise Forbidden(f"instance {request.title!r} was requested by another user")


def _assign(row: PartitionRow | SharedRow, wanted: dict[str, Any]) -> dict[str, Any]:
    """Set the attributes that differ from `wanted`; returns those."""
    changed = {key: value for key, value in wanted.items() if getattr(row, key) != value}
    for key, value in changed.items():
        setattr(row, key, value)
    return changed


def _stronger(state: str, other: str) -> str:
    return state if _STATE_STRENGTH[state] >= _STATE_STRENGTH[other] else other


def _allocate(session: Session, computer: Any, title: str) -> PartitionRow:
    if not isinstance(computer, str) or not computer:
        raise BadRequest("no computer_guid in the filter and no default computer")
    row = lookups.free_partition(session, computer)
    if row is None:
        lookups.computer_row(session, computer)  # unknown: said so
        raise NotFound(f"no free partition on computer {computer!r} for {title!r}")
    return row


def _can_host(host: PartitionRow, request: InstanceRequest) -> bool:
    return (
        host.slap_state == BUSY
        and host.requested_state != DESTROYED
        and host.software_release == request.software_release
        and (not request.software_type or host.software_type == request.software_type)
    )


def _find_host(
    session: Session, request: InstanceRequest, computer: Any, sla: dict[str, Any]
) -> PartitionRow:
    query = (
        select(PartitionRow)
        .where(
            PartitionRow.computer == computer,
            PartitionRow.slap_state == BUSY,
            PartitionRow.software_release == request.software_release,
            PartitionRow.requested_state != DESTROYED,
        )
        .order_by(PartitionRow.id)
    )
    if request.software_type:
        query = query.where(PartitionRow.software_type == request.software_type)
    wanted_guid = sla.get("instance_guid")
    for row in session.scalars(query):
        if wanted_guid in (None, row.guid, f"{row.computer}-{row.reference}"):
            return row
    raise NotFound(
        f"no partition on {computer!r} can host shared instance {request.title!r} "
        f"({request.software_release}, type {request.software_type!r})"
    )


# --- bumps other transitions share -------------------------------------------------------


def mark_destroyed(tx: Tx, partitions: Iterable[PartitionRow]) -> None:
    """Ask for the destruction of these partitions (destroying an instance destroys its tree)."""
    for partition in partitions:
        if partition.requested_state != DESTROYED:
            partition.requested_state = DESTROYED
            tx.bump(partition)


def bump_requester(tx: Tx, instance: PartitionRow | SharedRow) -> None:
    """The partition that requested `instance` must re-read it."""
    if instance.requester_computer and instance.requester_partition:
        query = select(PartitionRow).where(
            PartitionRow.computer == instance.requester_computer,
            PartitionRow.reference == instance.requester_partition,
            PartitionRow.slap_state == BUSY,
        )
        requester = tx.session.scalar(query)
        if requester is not None:
            tx.bump(requester)


def bump_shared(tx: Tx, shared: SharedRow, previous_host: int | None, was_listed: bool) -> None:
    """A shared instance changed: bump it, and the hosts whose listing changed."""
    shared.timestamp = next_stamp(shared.timestamp)
    hosts = set()
    if was_listed and previous_host is not None:
        hosts.add(previous_host)
    if shared.listed:
        hosts.add(shared.host_id)
    for host_id in hosts:
        host = tx.session.get(PartitionRow, host_id)
        if host is not None:
            tx.bump(host)


def drop_shared(tx: Tx, shared: SharedRow) -> None:
    if shared.listed:
        host = tx.session.get(PartitionRow, shared.host_id)
        if host is not None:
            tx.bump(host)
    tx.session.delete(shared)


def rename_shared(tx: Tx, shared: SharedRow, new_name: str) -> None:
    if shared.title == new_name:
        return
    if lookups.title_taken(tx.session, SharedRow, new_name, shared.requested_by):
        raise Conflict(f"a shared instance named {new_name!r} already exists in this tree")
    shared.title = new_name
    bump_shared(tx, shared, previous_host=shared.host_id, was_listed=shared.listed)
