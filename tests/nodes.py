"""A formatted node talking to a live embedded master, for integration tests."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from slapgrid.exit_status import ExitStatus
from slapgrid.master.server import MasterServer
from slapgrid.master.storage import MasterStore
from slapgrid.node import layout
from slapgrid.node.format.run import run_format
from slapgrid.node.format.steps import EnsureDirectory, EnsureFile
from slapgrid.node.instance.partition import PARTITION_MODE
from slapgrid.node.instance.run import run_instance
from slapgrid.node.software.run import run_software
from slapgrid.node.supervisor.control import Supervisor
from slapgrid.slap.client import SlapClient
from support.addresses import loopback_network
from support.configs import node_config
from support.tls import Credentials
from support.waiting import wait_for

SOFTWARE = str(Path(__file__).parents[1] / "examples" / "hello" / "software.cfg")
COMPUTER = "COMP-INSTANCE"


class Node:
    """One formatted node with the example SR built, talking to a live embedded master."""

    def __init__(
        self, root: Path, server: MasterServer, store: MasterStore, software: Path
    ) -> None:
        self.root, self.server, self.store = root, server, store
        self.config = node_config(
            root,
            master_url=server.url,
            computer_id=COMPUTER,
            software_root=software,
            software_min_free_space=0,
            instance_min_free_space=0,
            promise_timeout=10,
        )
        self.client = SlapClient(server.url, COMPUTER)
        self.supervisor = Supervisor(self.config.instance_root)

    def request(self, title: str = "hello", state: str = "started", **parameters: str):
        return self.client.request(SOFTWARE, title, parameters=parameters, state=state)

    def flags(self) -> list[str]:
        """The command line's flags for this node: its master, computer and both roots."""
        config = self.config
        return [
            *("--master-url", config.master_url, "--computer-id", config.computer_id),
            *("--instance-root", str(config.instance_root)),
            *("--software-root", str(config.software_root)),
        ]

    def instance(self, **kwargs) -> ExitStatus:  # type: ignore[no-untyped-def]
        return run_instance(self.config, self.client, **kwargs).status

    def partition(self, title: str = "hello") -> str:
        for partition in self.client.computer().partitions:
            if partition.instance_title == title:
                return partition.partition_id
        raise AssertionError(f"no partition for {title}")

    def url(self, title: str = "hello") -> str:
        return self.client.request(SOFTWARE, title).connection["url"]

    def processes(self, pid: str) -> list[str]:
        """Process states, once out of STARTING (services count as up after startsecs)."""

        def settled() -> tuple[list[str]] | None:
            states = [f"{p.name}:{p.state}" for p in self.supervisor.process_info(pid)]
            return None if any(s.endswith("STARTING") for s in states) else (states,)

        (states,) = wait_for(settled, what=f"the services of {pid} to leave STARTING")
        return states

    def status_text(self, pid: str) -> str:
        return self.store.partition_status(COMPUTER, pid)["text"]


def formatted_partition(path: Path) -> Path:
    """A partition made as rootless `slapgrid format` makes it: mode 0750 and its marker."""
    user = {"name": pwd.getpwuid(os.geteuid()).pw_name, "path": str(path)}
    marker = json.dumps({"reference": path.name, "path": str(path), "user": user})
    EnsureDirectory(path, PARTITION_MODE).apply(dry_run=False)
    EnsureFile(path / layout.RESOURCE_FILE, marker).apply(dry_run=False)
    return path


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return answer.read().decode()


@contextlib.contextmanager
def embedded_master(root: Path, computer: str = COMPUTER) -> Iterator[MasterServer]:
    """The embedded master over HTTP on 127.0.0.1, its database in `root`."""
    store = MasterStore(root / "master.db", default_computer=computer)
    try:
        with MasterServer(store, insecure=True) as server:
            yield server
    finally:
        store.close()


def node_flags(master_url: str, root: Path, computer: str = COMPUTER) -> list[str]:
    """The command line's node flags: roots `root/instance` and `root/software` (made)."""
    for name in ("instance", "software"):
        (root / name).mkdir(exist_ok=True)
    return [
        *("--master-url", master_url, "--computer-id", computer),
        *("--instance-root", str(root / "instance"), "--software-root", str(root / "software")),
    ]


def format_partitions(
    master_url: str,
    root: Path,
    partitions: int,
    *,
    computer: str = COMPUTER,
    software_root: Path | None = None,
    credentials: Credentials | None = None,
) -> Path:
    """`slapgrid format` of rootless partitions in `root/instance`, on a loopback network
    of this node's own; the software root (default `root/software`) is made too. With
    `credentials`, the computer's certificate and the master's CA (a TLS master)."""
    software = software_root or root / "software"
    (root / "instance").mkdir()
    software.mkdir(exist_ok=True)
    options = {
        "master_url": master_url,
        "computer_id": computer,
        "instance_root": str(root / "instance"),
        "software_root": str(software),
        "partition_amount": partitions,
        "alter_user": False,
        "ipv4_local_network": loopback_network(),
        **(credentials.node_options() if credentials else {}),
    }
    assert run_format(None, options) == 0
    return software


@contextlib.contextmanager
def running_node(
    root: Path, partitions: int = 3, software_root: Path | None = None
) -> Iterator[Node]:
    """Master up, partitions formatted, the example SR supplied and built (or found built
    in `software_root`)."""
    with embedded_master(root) as server:
        software = format_partitions(server.url, root, partitions, software_root=software_root)
        node = Node(root, server, server.store, software)
        node.client.supply(SOFTWARE)
        assert run_software(node.config, node.client).status == 0
        try:
            yield node
        finally:
            node.supervisor.shutdown()
            node.client.close()
