"""Step 4: supervisord runs the partition's programs, or forgets them, as requested."""

from __future__ import annotations

from slapgrid.node.instance.deployment import Deployment
from slapgrid.slap.documents import STARTED


def supervise(job: Deployment) -> None:
    if job.partition.requested_state == STARTED:
        job.supervisor.write_partition(job.pid, job.paths.root, job.owner()[0])
        job.supervisor.reload()
        job.supervisor.start_partition(job.pid)
    else:
        job.supervisor.stop_partition(job.pid)
