"""Step 3: the partition's buildout, as its owner, logged to `.slapgrid/log/instance.log`."""

from __future__ import annotations

from slapgrid.node.buildout import run_instance_buildout
from slapgrid.node.instance.deployment import Deployment


def buildout(job: Deployment) -> None:
    log_file = job.paths.log
    log_file.parent.mkdir(parents=True, exist_ok=True)
    run_instance_buildout(
        job.config, job.paths.root, job.software, log_file=log_file, cancel=job.cancel
    )
