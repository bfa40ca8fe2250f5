"""A node for `slapgrid report` tests: an instance root, a certificate repository and a
recording master (the `node` fixture of the report integration modules)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from lxml import etree

from nodes import formatted_partition
from recording_server import Answer, RecordingServer
from slapgrid.exit_status import ExitStatus
from slapgrid.node.config import NodeConfig
from slapgrid.node.report.run import run_report
from slapgrid.slap import marshal
from slapgrid.slap.client import SlapClient
from slapgrid.slap.documents import Computer, ComputerPartition, SoftwareRelease
from slapgrid.slap.tioxml import computer_schema
from support.configs import node_config

COMPUTER_ID = "COMP-1"
SR = "http://example.invalid/software.cfg"
REPORTS = (
    "useComputer",
    "stoppedComputerPartition",
    "destroyedComputerPartition",
    "softwareInstanceError",
)


def consumption(resource: str, quantity: str = "1.5", reference: str = "other") -> str:
    return (
        f"<consumption><movement><resource>{resource}</resource><reference>{reference}</reference>"
        f"<quantity>{quantity}</quantity><price>0.00</price><VAT>None</VAT></movement>"
        "</consumption>"
    )


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


@dataclass
class Node:
    """An instance root, a certificate repository and a master answering from a table."""

    config: NodeConfig
    server: RecordingServer
    partitions: list[ComputerPartition] = field(default_factory=list)

    def path(self, partition_id: str) -> Path:
        return self.config.instance_root / partition_id

    def add(self, partition_id: str, state: str, *, free: bool = False) -> Path:
        software = None if free else SoftwareRelease(SR, COMPUTER_ID)
        self.partitions.append(ComputerPartition(COMPUTER_ID, partition_id, state, software))
        return formatted_partition(self.path(partition_id))

    def run(self, **kwargs: object) -> ExitStatus:
        document = marshal.dumps(Computer(COMPUTER_ID, self.partitions).to_wire())
        self.server.routes["getFullComputerInformation"] = Answer(200, document)
        self.server.requests.clear()
        with SlapClient(self.server.url, COMPUTER_ID) as client:
            return run_report(self.config, client, **kwargs).status  # type: ignore[arg-type]

    def calls(self) -> list[tuple[str, str | None]]:
        return [
            (r.path.lstrip("/"), r.form.get("computer_partition_id")) for r in self.server.requests
        ]

    def journal(self) -> etree._Element:
        (use,) = [r for r in self.server.requests if r.path == "/useComputer"]
        root = etree.fromstring(use.form["use_string"].encode())
        assert computer_schema().validate(root), computer_schema().error_log
        return root


@pytest.fixture(name="node")
def report_node(tmp_path: Path) -> Iterator[Node]:
    with RecordingServer() as server:
        for method in REPORTS:
            server.routes[method] = Answer(200, b"")
        certificates = tmp_path / "certificates"
        certificates.mkdir()
        config = node_config(
            tmp_path,
            master_url=server.url,
            computer_id=COMPUTER_ID,
            certificate_repository_path=certificates,
        )
        yield Node(config, server)
