"""partition.owner and shared_instance.owner: the user who requested the root (NULL: trusted).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa

from slapgrid.master.migrations import add_column

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    add_column("partition", sa.Column("owner", sa.String(255)))
    add_column("shared_instance", sa.Column("owner", sa.String(255)))
