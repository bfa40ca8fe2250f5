"""Who runs `slapgrid report` and what time it is, read in one place.

Root-only branches (attributing processes by uid, handing files back to a partition's
owner) and retention dates depend on these; tests pass their own to reach those branches
without root and without waiting.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Environment:
    euid: int
    clock: Callable[[], float] = time.time

    @classmethod
    def current(cls) -> Environment:
        return cls(os.geteuid())

    @property
    def is_root(self) -> bool:
        return self.euid == 0
