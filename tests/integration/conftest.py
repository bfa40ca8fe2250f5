"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nodes import Node, running_node


@pytest.fixture(scope="session")
def built_software(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A software root with the example SR built once: every node of the session shares it,
    as the nodes of one machine would."""
    root = tmp_path_factory.mktemp("software")
    with running_node(tmp_path_factory.mktemp("builder"), partitions=1, software_root=root):
        return root


@pytest.fixture
def node(tmp_path: Path, built_software: Path) -> Iterator[Node]:
    """A fresh node (master, partitions, supervisord) per test: no test sees another's."""
    with running_node(tmp_path, software_root=built_software) as running:
        yield running
