"""Step 7, last: `.timestamp` marks the deployment done; nothing before it may be skipped."""

from __future__ import annotations

from slapgrid.node.files import atomic_write
from slapgrid.node.instance.deployment import Deployment


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
