"""Step 4: supervisord runs the partition's programs, or forgets them, as requested."""

from __future__ import annotations

from slapgrid.node.instance.deployment import Deployment
from slapgrid.slap.documents import STARTED


def supervise(job: Deployment) -> None:
    """A started partition with programs launches supervisord if it is down (the first one
    to get here does); one without programs, or stopped, never does."""
    supervisor = job.supervisor
    if job.partition.requested_state == STARTED:
        supervisor.write_partition(job.pid, job.paths.root, job.owner()[0])
        if supervisor.partition_conf(job.pid).is_file():
            supervisor.ensure_running()
            supervisor.reload()
            supervisor.start_partition(job.pid)
            return
    supervisor.stop_partition(job.pid)
