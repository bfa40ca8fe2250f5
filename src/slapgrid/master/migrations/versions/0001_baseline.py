"""The schema of the first release (schema_version "1" in `meta`).

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def reported() -> list[sa.Column]:
    return [
        sa.Column("status_text", sa.Text()),
        sa.Column("status_since", sa.BigInteger()),
        sa.Column("status_at", sa.BigInteger()),
    ]


def owning_computer() -> sa.Column:
    """The computer a row belongs to: gone with it."""
    return sa.Column(
        "computer",
        sa.String(255),
        sa.ForeignKey("computer.reference", ondelete="CASCADE"),
        nullable=False,
    )


def computer_event() -> list[sa.Column]:
    return [
        sa.Column("id", sa.Integer(), primary_key=True),
        owning_computer(),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "meta",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    op.create_table(
        "computer",
        sa.Column("reference", sa.String(255), primary_key=True),
        sa.Column("address", sa.String(255)),
        sa.Column("netmask", sa.String(255)),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        *reported(),
    )
    op.create_table(
        "partition",
        sa.Column("id", sa.Integer(), primary_key=True),
        owning_computer(),
        sa.Column("reference", sa.String(255), nullable=False),
        sa.Column("slap_state", sa.String(16), nullable=False),
        sa.Column("guid", sa.String(64), unique=True),
        sa.Column("title", sa.String(255)),
        sa.Column("requested_by", sa.String(255), nullable=False),
        sa.Column("requester_computer", sa.String(255)),
        sa.Column("requester_partition", sa.String(255)),
        sa.Column("software_release", sa.Text()),
        sa.Column("software_type", sa.String(255)),
        sa.Column("parameters", sa.Text()),
        sa.Column("filter", sa.Text()),
        sa.Column("connection", sa.Text()),
        sa.Column("requested_state", sa.String(16), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        *reported(),
        sa.UniqueConstraint("computer", "reference"),
        sa.UniqueConstraint("title", "requested_by"),
    )
    op.create_table(
        "partition_address",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "partition_id",
            sa.Integer(),
            sa.ForeignKey("partition.id", ondelete="CASCADE"),
            nullable=False,
        ),
        *(
            sa.Column(name, sa.String(255), nullable=False)
            for name in ("interface", "address", "netmask", "gateway", "network")
        ),
    )
    op.create_table(
        "software_installation",
        sa.Column("id", sa.Integer(), primary_key=True),
        owning_computer(),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("requested_state", sa.String(16), nullable=False),
        *reported(),
        sa.UniqueConstraint("computer", "url"),
    )
    op.create_table(
        "shared_instance",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("guid", sa.String(64), nullable=False, unique=True),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("requested_by", sa.String(255), nullable=False),
        sa.Column("requester_computer", sa.String(255)),
        sa.Column("requester_partition", sa.String(255)),
        sa.Column("software_release", sa.Text(), nullable=False),
        sa.Column("software_type", sa.String(255), nullable=False),
        sa.Column("parameters", sa.Text(), nullable=False),
        sa.Column("filter", sa.Text(), nullable=False),
        sa.Column("connection", sa.Text()),
        sa.Column("requested_state", sa.String(16), nullable=False),
        sa.Column("host_id", sa.Integer(), sa.ForeignKey("partition.id", ondelete="SET NULL")),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        *reported(),
        sa.UniqueConstraint("title", "requested_by"),
    )
    op.create_index("ix_shared_instance_host_id", "shared_instance", ["host_id"])
    op.create_table(
        "usage_report", sa.Column("document", sa.Text(), nullable=False), *computer_event()
    )
    op.create_table(
        "computer_bang", sa.Column("message", sa.Text(), nullable=False), *computer_event()
    )
    op.create_table(
        "registration_token",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("computer", sa.String(255), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("used_at", sa.BigInteger()),
    )
    op.create_table(
        "credential",
        sa.Column("serial", sa.String(40), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("computer", sa.String(255)),
        sa.Column("partition", sa.String(255)),
        sa.Column("user", sa.String(255)),
        sa.Column("instance", sa.String(64)),
        sa.Column("certificate", sa.Text(), nullable=False),
        sa.Column("issued_at", sa.BigInteger(), nullable=False),
        sa.Column("not_after", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_credential_computer", "credential", ["computer"])
    op.bulk_insert(
        sa.table("meta", sa.column("name"), sa.column("value")),
        [{"name": "schema_version", "value": "1"}],
    )
