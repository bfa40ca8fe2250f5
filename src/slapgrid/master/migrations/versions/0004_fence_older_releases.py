"""schema_version "2" in `meta`: releases before migrations refuse the database in one line
(they know version "1" only) rather than run on a schema they do not know.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.execute("UPDATE meta SET value = '2' WHERE name = 'schema_version'")
