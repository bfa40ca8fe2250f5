"""Step 3: the partition's buildout, as its owner, logged to `.slapgrid/log/instance.log`."""

from __future__ import annotations

from slapgrid.node.buildout import run_instance_buildout
from slapgrid.node.files import rotate
from slapgrid.node.instance.deployment import Deployment

LOG_LIMIT = 20 << 20
"""instance.log is rotated before a deployment once it holds this much (the reference's 20 MB)."""
LOG_BACKUPS = 5
"""Rotated logs kept: instance.log.1 (newest) … instance.log.5."""


def buildout(job: Deployment, log_limit: int = LOG_LIMIT, log_backups: int = LOG_BACKUPS) -> None:
    log_file = job.paths.log
    log_file.parent.mkdir(parents=True, exist_ok=True)
    rotate(log_file, log_limit, log_backups)
    run_instance_buildout(
        job.config, job.paths.root, job.software, log_file=log_file, cancel=job.cancel
    )
