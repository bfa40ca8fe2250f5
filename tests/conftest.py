"""Fixtures every test directory shares: the master's database, on SQLite and PostgreSQL.

A test taking `database` runs twice, `[sqlite]` and `[postgresql]`. PostgreSQL is real: one
throw-away cluster for the session, started when a test first needs it, and databases at the
newest schema, emptied after each test for the next. Without PostgreSQL's server programs
those tests fail (CI installs them), never skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.master_databases import MasterDatabases
from support.postgres import Cluster, Unavailable

DATABASES = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    try:
        cluster = Cluster()
    except Unavailable as exc:
        pytest.fail(str(exc))
    with cluster:
        yield cluster


@pytest.fixture(scope="session")
def master_databases(postgres_cluster: Cluster) -> MasterDatabases:
    return MasterDatabases(postgres_cluster)


def new_database(request: pytest.FixtureRequest, directory: Path) -> Iterator[str]:
    """A master database of the kind `request.param` names: `master.db` in `directory` (not
    made yet), or an empty PostgreSQL database at the newest schema (its URL)."""
    if request.param == "postgresql":
        databases: MasterDatabases = request.getfixturevalue("master_databases")
        with databases.lend() as url:
            yield url
    else:
        yield str(directory / "master.db")


@pytest.fixture(params=DATABASES)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A master database for one test alone: a SQLite file's path, or a PostgreSQL URL."""
    yield from new_database(request, tmp_path)


@pytest.fixture(scope="module", params=DATABASES)
def module_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The same, shared by the tests of one module."""
    yield from new_database(request, tmp_path_factory.mktemp("module-db"))
