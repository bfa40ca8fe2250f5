"""Step 6: the master learns the partition's new state and the instances it requested."""

from __future__ import annotations

import logging

from slapgrid.node.files import read_text
from slapgrid.node.instance.deployment import Deployment
from slapgrid.slap.documents import STARTED
from slapgrid.slap.errors import NotFoundError

log = logging.getLogger(__name__)


def related_references(transaction: str) -> list[str]:
    """The titles the instance's buildout requested, one a line, as the reference reads them.

    Split on newlines only and nothing stripped: the reference sends a title with its
    spaces, and so must we, or the master hears of an instance nobody requested.
    """
    return [line for line in transaction.split("\n") if line]


def tell_master(job: Deployment) -> None:
    if job.partition.requested_state == STARTED:
        job.client.started(job.pid)
    else:
        job.client.stopped(job.pid)
    transaction = job.paths.request_transaction
    text = read_text(transaction)
    if text is not None:
        try:
            job.client.update_related_instances(job.pid, related_references(text))
        except NotFoundError:
            log.debug("master does not track related instances", extra={"partition": job.pid})
