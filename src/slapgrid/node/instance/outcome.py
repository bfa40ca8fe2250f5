"""What an instance run did: partitions by how they went, promise results, the exit status.

The run fills it from its worker threads (under its own lock); the summary line, the exit
code, the run's typed result and the record `slapgrid status` reads all come from it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from slapgrid.exit_status import ExitStatus
from slapgrid.node.planner import Action
from slapgrid.slap.documents import Computer


def instance_names(computer: Computer) -> dict[str, dict[str, str]]:
    """Title and Software Release of each busy partition: disk does not say them."""
    return {
        p.partition_id: {
            "title": p.instance_title or "",
            "software_release": p.software_release_url or "",
        }
        for p in computer.partitions
        if p.software_release_url
    }


@dataclass
class InstanceOutcome:
    """What a run did, for the summary line, the exit code and `slapgrid status`."""

    done: list[str] = field(default_factory=list)
    up_to_date: list[str] = field(default_factory=list)  # only their promises ran
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    promise_failed: list[tuple[str, str]] = field(default_factory=list)
    postponed: list[str] = field(default_factory=list)
    promises: dict[str, list[dict[str, object]]] = field(default_factory=dict)  # checks
    started_at: float = field(default_factory=time.time)

    @property
    def status(self) -> ExitStatus:
        if self.failed:
            return ExitStatus.FAILED
        return ExitStatus.PROMISE_FAILED if self.promise_failed else ExitStatus.OK

    def counts(self) -> dict[str, int]:
        """How many partitions went each way, for the run's typed result."""
        fields = ("done", "up_to_date", "skipped", "failed", "promise_failed", "postponed")
        return {name: len(getattr(self, name)) for name in fields}

    def as_dict(
        self, actions: Iterable[Action], instances: dict[str, dict[str, str]] | None = None
    ) -> dict[str, object]:
        """The run record; `instances` names what each partition hosts, for `status`."""
        return {
            "instances": instances or {},
            "at": self.started_at,
            "duration": round(time.time() - self.started_at, 3),
            "plan": [
                {"kind": a.kind.value, "target": a.target, "reason": a.reason} for a in actions
            ],
            "done": self.done,
            "up_to_date": self.up_to_date,
            "skipped": self.skipped,
            "failed": self.failed,
            "promise_failed": self.promise_failed,
            "postponed": self.postponed,
            "promises": self.promises,
            "exit_code": self.status,
        }
