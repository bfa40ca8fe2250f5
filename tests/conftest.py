"""Fixtures every test directory shares: the master's database, on SQLite and PostgreSQL.

A test taking `database` runs twice, `[sqlite]` and `[postgresql]`. PostgreSQL is real: one
throw-away cluster for the session, started when a test first needs it, a new database per
test. Without PostgreSQL's server programs those tests fail (CI installs them), never skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from slapgrid.master.storage import MasterStore
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
def postgres_template(postgres_cluster: Cluster) -> str:
    """A database of the cluster at the newest schema, which test databases copy: cheaper
    than running every migration for every test (tests of migrations start empty)."""
    name = "master_template"
    MasterStore(postgres_cluster.create_database(name)).close()
    return name


def new_database(request: pytest.FixtureRequest, directory: Path) -> str:
    """A fresh master database of the kind `request.param` names: `master.db` in
    `directory` (not made yet), or a new PostgreSQL database of the session's cluster at the
    newest schema (its URL)."""
    if request.param == "postgresql":
        cluster: Cluster = request.getfixturevalue("postgres_cluster")
        return cluster.create_database(template=request.getfixturevalue("postgres_template"))
    return str(directory / "master.db")


@pytest.fixture(params=DATABASES)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A master database for one test alone: a SQLite file's path, or a PostgreSQL URL."""
    return new_database(request, tmp_path)


@pytest.fixture(scope="module", params=DATABASES)
def module_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """The same, shared by the tests of one module."""
    return new_database(request, tmp_path_factory.mktemp("module-db"))
