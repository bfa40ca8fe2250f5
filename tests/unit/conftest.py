"""Fixtures shared by the unit tests of the master's store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from master_site import build_tree, formatted_store
from slapgrid.master.storage import MasterStore


@pytest.fixture
def store(database: str) -> Iterator[MasterStore]:
    with formatted_store(database) as master:
        yield master


@pytest.fixture
def tree(store: MasterStore) -> MasterStore:
    return build_tree(store)
