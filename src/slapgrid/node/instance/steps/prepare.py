"""Step 1: the partition is usable, its last attempt forgotten, its Software Release built."""

from __future__ import annotations

import contextlib

from slapgrid.node import layout
from slapgrid.node.instance.deployment import DeployError, Deployment
from slapgrid.node.instance.partition import check_partition


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
