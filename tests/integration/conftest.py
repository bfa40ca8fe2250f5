"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nodes import Node, running_node


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One node per test module: tests in a module share its partitions, in file order."""
    with running_node(tmp_path_factory.mktemp("node")) as running:
        yield running
