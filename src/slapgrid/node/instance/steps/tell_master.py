"""Step 6: the master learns the partition's new state and the instances it requested."""

from __future__ import annotations

import logging

from slapgrid.node.files import read_text
from slapgrid.node.instance.deployment import Deployment
from slapgrid.slap.documents import STARTED
from slapgrid.slap.errors import NotFoundError

log = logging.getLogger(__name__)


def tell_master(job: Deployment) -> None:
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
