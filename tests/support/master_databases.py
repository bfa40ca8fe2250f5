"""PostgreSQL databases for the master's tests, at the newest schema, reused test after test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from slapgrid.master.storage import MasterStore
from slapgrid.master.tables import Base, MetaRow
from support.postgres import Cluster


class MasterDatabases:
    """PostgreSQL databases at the newest schema, lent to one test (or module) at a time.

    Given back, a database is emptied as new (TRUNCATE, ids restarted): a small fraction of
    the cost of CREATE DATABASE, or of running the migrations again.
    """

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.template = "master_template"
        MasterStore(cluster.create_database(self.template)).close()
        self.free: list[str] = []

    @contextmanager
    def lend(self) -> Iterator[str]:
        url = self.free.pop() if self.free else self.cluster.create_database(template=self.template)
        yield url
        self._empty(url)
        self.free.append(url)

    @staticmethod
    def _empty(url: str) -> None:
        tables = ", ".join(
            f'"{table.name}"'
            for table in Base.metadata.sorted_tables
            if table is not MetaRow.__table__
        )
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(  # what a test left open would hold the tables
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            connection.execute(f"TRUNCATE {tables} RESTART IDENTITY")
