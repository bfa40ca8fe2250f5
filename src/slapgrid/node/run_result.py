"""What a `software`, `instance` or `report` run ended with, typed for its two readers.

The command line turns `status` into the process exit code; the daemon plans its next
runs from `built` and `failures` without re-reading the state file the run just wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from slapgrid.exit_status import ExitStatus
from slapgrid.node.planner import Failure


@dataclass(frozen=True)
class RunResult:
    status: ExitStatus
    counts: Mapping[str, int] = field(default_factory=dict)  # e.g. done, failed, postponed
    built: bool = False  # software: something was built, partitions may now deploy
    failures: Mapping[str, Failure] = field(default_factory=dict)  # items in back-off, by key
