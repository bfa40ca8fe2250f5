"""Step 1: the partition is usable, its last attempt forgotten, its Software Release built,
and its file system has the room `instance_min_free_space` asks for."""

from __future__ import annotations

import contextlib

from slapgrid.node import layout
from slapgrid.node.disk import check_free_space
from slapgrid.node.instance.deployment import DeployError, Deployment
from slapgrid.node.instance.partition import check_partition


def prepare(job: Deployment) -> None:
    paths = job.paths
    problems = check_partition(paths.root, None)
    if problems:
        raise DeployError("; ".join(problems))
    # the instances this deployment requests are listed afresh: last run's are stale
    for stale in (paths.timestamp, paths.error_log, paths.request_transaction):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    check_free_space(paths.root, job.config.instance_min_free_space, "instance_min_free_space")
    if not (job.software / layout.COMPLETED).exists():
        url = job.partition.software_release_url
        raise DeployError(f"software release {url} is not built yet: run `slapgrid software`")
    link = paths.software_link
    if link.is_symlink() or not link.exists():
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(job.software)
