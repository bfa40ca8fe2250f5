"""computer.last_contact: when its node last fetched its document (µs).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa

from slapgrid.master.migrations import add_column

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    add_column("computer", sa.Column("last_contact", sa.BigInteger()))
