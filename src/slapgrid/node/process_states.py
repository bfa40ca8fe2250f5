"""What supervisord says of a partition's programs, as the planner reads it (pure data).

The instance run reads every program's state with one `getAllProcessInfo` per pass
(`Supervisor.process_states`); the planner decides from it whether an up-to-date
partition must be started again, or stopped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

UP_STATES = frozenset({"RUNNING", "STARTING", "BACKOFF"})
"""supervisord states of a program that runs or is being (re)started by supervisord itself."""


class ProcessState(NamedTuple):
    """One program of a partition as supervisord reports it."""

    name: str
    state: str  # supervisord's state name: RUNNING, STOPPED, EXITED, FATAL …
    description: str  # supervisord's own words: "Not started", "Exited too quickly" …
    service: bool  # a service (restarted when it exits), not a run-once script
    start: float = 0.0  # when supervisord last started it (epoch seconds, whole)

    @property
    def down(self) -> bool:
        """Should run and does not; a run-once script that exited has done its job."""
        return self.state not in UP_STATES and not (self.state == "EXITED" and not self.service)

    def __str__(self) -> str:
        return f"{self.name} ({self.state} {self.description})".replace(" )", ")")


def running_since(programs: Iterable[ProcessState]) -> float:
    """When a partition's services last (re)started; `math.inf` when one is down.

    A promise result older than that describes a process that is gone. A run-once script
    that exited is done, not down.
    """
    since = 0.0
    for program in programs:
        if program.state == "RUNNING":  # whole seconds: it may have started up to 1 s later
            started = program.start + 1.0
        elif program.state == "EXITED" and not program.service:
            started = 0.0
        else:
            started = math.inf
        since = max(since, started)
    return since


@dataclass(frozen=True)
class Services:
    """A partition's programs: declared by its deployment, and as supervisord runs them."""

    declared: bool  # the partition's supervisord program file exists
    processes: tuple[ProcessState, ...] = ()  # empty: supervisord does not know the group
