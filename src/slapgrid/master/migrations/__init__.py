"""The master database's Alembic migrations, run by `slapgrid.master.database.upgrade`.

Each revision in `versions/` is frozen: it names its tables and columns itself and never
imports `tables`, so it still makes the same schema once the models have moved on. A change
to `tables` comes with a new revision: tests/unit/test_master_migrations.py checks that the
revisions make what the models describe.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


def add_column(table: str, column: sa.Column) -> None:
    """Add `column` unless the table has it: releases before migrations added their new
    columns in place at start, so a database they opened may hold it already."""
    if column.name not in {known["name"] for known in sa.inspect(op.get_bind()).get_columns(table)}:
        op.add_column(table, column)
