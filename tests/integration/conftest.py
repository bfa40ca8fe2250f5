"""Fixtures of the integration tests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from nodes import Node, running_node
from slapgrid.node.software.run import run_software
from support import cookbook
from support.software_releases import HELLO, Master, Release, make_config, software_dir


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


@pytest.fixture(scope="session")
def hello(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """examples/hello built once from an empty software root by `run_software`."""
    config = make_config(tmp_path_factory.mktemp("hello"))
    master = Master(Release(str(HELLO)))
    started = time.monotonic()
    code = run_software(config, master).status
    duration = time.monotonic() - started
    return SimpleNamespace(
        config=config,
        master=master,
        code=code,
        duration=duration,
        software=software_dir(config, str(HELLO)),
    )


@pytest.fixture(scope="session")
def cookbook_software(tmp_path_factory: pytest.TempPathFactory) -> cookbook.Built:
    """The cookbook SR (tests/software/cookbook) built once per session, eggs cached across
    sessions in ~/.cache/slapgrid-tests (support/cookbook.py)."""
    built = cookbook.build(tmp_path_factory.mktemp("cookbook"))
    print(f"\ncookbook SR built in {built.seconds:.1f} s (status {built.status})")
    return built
