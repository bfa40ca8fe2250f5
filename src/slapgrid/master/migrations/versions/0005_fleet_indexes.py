"""Indexes for a fleet-sized database: no frequent lookup scans a table any more.

A partition's addresses, an instance tree's members, what a partition requested, and a
computer's usage reports and bangs were each found by a scan: at 10,000 computers that
was most of what a request or a document render cost.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"

INDEXES = {
    "ix_partition_address_partition_id": ("partition_address", ["partition_id"]),
    "ix_partition_requested_by": ("partition", ["requested_by"]),
    "ix_partition_requester": ("partition", ["requester_computer", "requester_partition"]),
    "ix_shared_instance_requested_by": ("shared_instance", ["requested_by"]),
    "ix_shared_instance_requester": (
        "shared_instance",
        ["requester_computer", "requester_partition"],
    ),
    "ix_usage_report_computer": ("usage_report", ["computer"]),
    "ix_computer_bang_computer": ("computer_bang", ["computer"]),
}


def upgrade() -> None:
    for name, (table, columns) in INDEXES.items():
        op.create_index(name, table, columns)
