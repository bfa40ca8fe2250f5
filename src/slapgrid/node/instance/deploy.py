"""Deploying one partition, as a sequence of small steps (prepare → profile → buildout →
supervise → promises → report → commit).

Each step either completes or raises; `.timestamp` is written by the last step only, so a
failure anywhere — or a kill — leaves the partition marked for another attempt.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from slapgrid.errors import SlapgridError
from slapgrid.exit_status import ExitStatus
from slapgrid.node import layout, safety
from slapgrid.node.buildout import run_instance_buildout
from slapgrid.node.config import NodeConfig
from slapgrid.node.files import atomic_write, read_text
from slapgrid.node.instance.partition import (
    check_partition,
    instance_profile,
    render_buildout,
    write_certificate,
)
from slapgrid.node.promises import run as promises
from slapgrid.node.supervisor.control import Supervisor
from slapgrid.slap.client import SlapClient
from slapgrid.slap.documents import STARTED, STOPPED, ComputerPartition
from slapgrid.slap.errors import NotFoundError

log = logging.getLogger(__name__)

START_GRACE = 10.0


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


def prepare(job: Deployment) -> None:
    paths = job.paths
    problems = check_partition(paths.root, None)
    if problems:
        raise DeployError("; ".join(problems))
    for stale in (paths.timestamp, paths.error_log):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    if not (job.software / layout.COMPLETED).exists():
        url = job.partition.software_release_url
        raise DeployError(f"software release {url} is not built yet: run `slapgrid software`")
    link = paths.software_link
    if link.is_symlink() or not link.exists():
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(job.software)


def write_profile(job: Deployment) -> None:
    template = instance_profile(job.software)
    if template is None:
        raise DeployError(
            f"software release {job.partition.software_release_url} has no instance.cfg"
        )
    job.refresh_certificates()
    key_file, cert_file = job.certificate_files()
    text = render_buildout(
        job.config,
        job.partition,
        template.read_text(encoding="utf-8"),
        key_file=key_file,
        cert_file=cert_file,
    )
    path = job.paths.buildout_cfg
    atomic_write(path, text, 0o640)
    if os.geteuid() == 0:
        os.chown(path, 0, job.owner()[1])  # readable by the partition, not writable


def buildout(job: Deployment) -> None:
    log_file = job.paths.log
    log_file.parent.mkdir(parents=True, exist_ok=True)
    run_instance_buildout(
        job.config, job.paths.root, job.software, log_file=log_file, cancel=job.cancel
    )


def supervise(job: Deployment) -> None:
    if job.partition.requested_state == STARTED:
        job.supervisor.write_partition(job.pid, job.paths.root, job.owner()[0])
        job.supervisor.reload()
        job.supervisor.start_partition(job.pid)
    else:
        job.supervisor.stop_partition(job.pid)


def check_promises(job: Deployment, mode: str = promises.TEST) -> promises.PromiseReport:
    key_file, cert_file = job.certificate_files()
    return promises.run_promises(
        job.paths.root,
        mode=mode,
        timeout=job.config.promise_timeout,
        config={
            "partition-id": job.pid,
            "computer-id": job.partition.computer_id,
            "master-url": job.config.master_url,
            "partition-key": str(key_file or ""),
            "partition-cert": str(cert_file or ""),
        },
    )


def promises_after_start(job: Deployment) -> promises.PromiseReport:
    """Services just (re)started need a moment to listen: a failing promise is retried
    for up to START_GRACE seconds before the deployment counts as a promise failure."""
    deadline = time.monotonic() + START_GRACE
    waiting, pause = False, 0.05  # most services listen within a few tenths of a second
    while True:
        outcome = check_promises(job)
        if not outcome.failed or time.monotonic() > deadline or job.cancel.is_set():
            promises.log_report(outcome, job.pid)
            return outcome
        if not waiting:
            waiting = True
            log.info(
                "%s: waiting up to %g s for %s to pass",
                job.pid,
                START_GRACE,
                ", ".join(result.title for result in outcome.failures),
                extra={"partition": job.pid},
            )
        time.sleep(pause)
        pause = min(pause * 1.5, 0.5)


def report(job: Deployment) -> None:
    if job.partition.requested_state == STARTED:
        job.client.started(job.pid)
    else:
        job.client.stopped(job.pid)
    transaction = job.paths.request_transaction
    text = read_text(transaction)
    if text is not None:
        references = [line.strip() for line in text.splitlines() if line.strip()]
        try:
            job.client.update_related_instances(job.pid, references)
        except NotFoundError:
            log.debug("master does not track related instances", extra={"partition": job.pid})


def freeze_retention_delay(job: Deployment) -> None:
    """The SLA's retention delay is frozen at the first successful deployment (§5.3)."""
    path = job.paths.retention_delay
    if not path.exists():
        raw = (job.partition.filter or {}).get("retention_delay", 0)
        try:
            delay = float(raw)
        except (TypeError, ValueError):
            delay = 0.0
        atomic_write(path, str(delay), 0o644)


def commit(job: Deployment) -> None:
    freeze_retention_delay(job)
    timestamp = job.partition.timestamp
    if timestamp is not None:
        atomic_write(job.paths.timestamp, timestamp, 0o644)


def deploy(job: Deployment) -> None:
    """Run every step; a stopped partition is stopped even when its buildout failed."""
    safety.partition_id(job.pid)
    prepare(job)
    write_profile(job)
    try:
        buildout(job)
    except BaseException:
        if job.partition.requested_state == STOPPED:
            job.supervisor.stop_partition(job.pid)
        raise
    supervise(job)
    if job.partition.requested_state == STARTED:
        outcome = promises_after_start(job)
        if outcome.failed:
            raise PromiseFailure(outcome.error_message or "a promise failed")
    report(job)
    commit(job)
