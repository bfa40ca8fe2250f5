"""One partition's deployment: what every step reads, and how a step says it failed."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from slapgrid.errors import SlapgridError
from slapgrid.exit_status import ExitStatus
from slapgrid.node import layout
from slapgrid.node.config import NodeConfig
from slapgrid.node.instance.partition import write_certificate
from slapgrid.node.supervisor.control import Supervisor
from slapgrid.slap.client import SlapClient
from slapgrid.slap.documents import ComputerPartition


class DeployError(SlapgridError):
    """A partition could not be deployed; the message is what the master is told."""


class PromiseFailure(DeployError):
    """Deployed, but a promise failed: the partition is not reported started."""

    exit_code = ExitStatus.PROMISE_FAILED


@dataclass
class Deployment:
    config: NodeConfig
    client: SlapClient
    supervisor: Supervisor
    partition: ComputerPartition
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def pid(self) -> str:
        return self.partition.partition_id

    @property
    def paths(self) -> layout.PartitionPaths:
        return layout.partition(self.config.instance_root, self.pid)

    @property
    def software(self) -> Path:
        return layout.software_dir(
            self.config.software_root, self.partition.software_release_url or ""
        )

    def owner(self) -> tuple[int, int]:
        info = self.paths.root.stat()
        return info.st_uid, info.st_gid

    def certificate_files(self) -> tuple[Path | None, Path | None]:
        """(key, certificate) of the partition, when a repository is configured."""
        repository = self.config.certificate_repository_path
        if repository is None:
            return None, None
        return layout.certificate_files(repository, self.pid)

    def refresh_certificates(self) -> None:
        repository = self.config.certificate_repository_path
        if repository is not None:
            certificate, key = self.client.partition_certificate(self.pid)
            write_certificate(repository, self.pid, certificate, key, self.owner())
