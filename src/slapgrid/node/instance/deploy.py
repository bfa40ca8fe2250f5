"""Deploying one partition, as a sequence of small steps (node/instance/steps/): prepare →
profile → buildout → supervise → promises → tell the master → commit.

Each step either completes or raises; `.timestamp` is written by the last step only, so a
failure anywhere — or a kill — leaves the partition marked for another attempt.
An up-to-date partition whose services are down only goes through supervise → promises.
"""

from __future__ import annotations

from slapgrid.node import safety
from slapgrid.node.instance.deployment import Deployment
from slapgrid.node.instance.steps.buildout import buildout
from slapgrid.node.instance.steps.commit import commit
from slapgrid.node.instance.steps.prepare import prepare
from slapgrid.node.instance.steps.profile import write_profile
from slapgrid.node.instance.steps.promises import keep_promises
from slapgrid.node.instance.steps.supervise import supervise
from slapgrid.node.instance.steps.tell_master import tell_master
from slapgrid.slap.documents import STARTED, STOPPED


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
        keep_promises(job)
    tell_master(job)
    commit(job)


def start_again(job: Deployment) -> None:
    """Up to date, services down (a reboot, a stop by hand): start them (re-adding a group
    supervisord lost), check promises as after a deployment, tell the master."""
    supervise(job)
    keep_promises(job)
    job.client.started(job.pid)
