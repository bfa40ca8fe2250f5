"""Alembic's environment: the migrations run on the connection `database.upgrade` holds,
inside the transaction it began (so they are serialised with every other writer)."""

from alembic import context

context.configure(connection=context.config.attributes["connection"])
with context.begin_transaction():
    context.run_migrations()
