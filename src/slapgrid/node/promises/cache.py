"""What the engine remembers of each promise between runs, and what it decides from it.

One JSON file per promise in `P/.slapgrid/promise/cache/<title>`, with the reference's keys so
a node can move between the two agents.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slapgrid.node.files import atomic_write
from slapgrid.node.promises.discovery import PromiseFile
from slapgrid.node.promises.results import (
    ANOMALY,
    DEFAULT_PERIODICITY,
    MODES,
    RESULT_TYPES,
    TEST,
    PromiseResult,
)

HISTORY_LENGTH = 10


@dataclass
class CacheEntry:
    """A promise's memory: its modes, periodicity, next due time and recent runs.

    The reference's keys are kept (`is_tested`, `is_anomaly_detected`, `periodicity`,
    `next_run_after`, `module_file`, `module_file_mtime`); `history` holds the last runs as
    `[failed, message, date]`, oldest first, for the promise's own test()/anomaly().
    """

    module_file: str
    module_file_mtime: float
    modes: tuple[str, ...] = MODES
    periodicity: float = DEFAULT_PERIODICITY
    next_run_after: float = 0.0
    bang_on_failure: bool = False
    history: list[list[Any]] = field(default_factory=list)
    checked_at: float = 0.0  # when it last ran: its result's date, to the microsecond

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "is_tested": TEST in self.modes,
            "is_anomaly_detected": ANOMALY in self.modes,
            "periodicity": self.periodicity,
            "next_run_after": self.next_run_after,
            "timestamp": now,
            "module_file": self.module_file,
            "module_file_mtime": self.module_file_mtime,
            "bang_on_failure": self.bang_on_failure,
            "history": self.history[-HISTORY_LENGTH:],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CacheEntry:
        modes = tuple(
            mode
            for mode, key in ((TEST, "is_tested"), (ANOMALY, "is_anomaly_detected"))
            if data.get(key, True)
        )
        return cls(
            module_file=str(data["module_file"]),
            module_file_mtime=float(data["module_file_mtime"]),
            modes=modes,
            periodicity=float(data.get("periodicity", DEFAULT_PERIODICITY)),
            next_run_after=float(data.get("next_run_after", 0.0)),
            bang_on_failure=bool(data.get("bang_on_failure", False)),
            history=[list(item) for item in data.get("history", [])],
            checked_at=float(data.get("timestamp", 0.0)),
        )


class Decision(enum.Enum):
    """What to do with a promise this time."""

    RUN = "run"
    SKIP = "skip"  # it does not take part in this mode
    REUSE = "reuse"  # not due yet: its last result stands


def decide(mode: str, cache: CacheEntry | None, now: float, has_result: bool) -> Decision:
    """Test mode runs every promise taking part in tests; anomaly mode only the due ones."""
    if cache is None:
        return Decision.RUN
    if mode not in cache.modes:
        return Decision.SKIP
    if mode == ANOMALY and now < cache.next_run_after and has_result:
        return Decision.REUSE
    return Decision.RUN


def still_fresh(stored: PromiseResult, cache: CacheEntry | None, fresh_after: float | None) -> bool:
    """Whether a stored result may stand for a check made now.

    `fresh_after` is when the partition's services last (re)started (None: any result
    stands). Only a periodic check's success made since then may: the test right after a
    (re)start is not reused, so the first check after it always really runs, and a failure
    is checked again each time, so a recovery shows at once.
    """
    if fresh_after is None:
        return True
    periodic = stored.type == RESULT_TYPES[ANOMALY] and not stored.failed
    return periodic and cache is not None and cache.checked_at >= fresh_after


def cache_is_current(cache: CacheEntry, promise: PromiseFile, mtime: float) -> bool:
    """A cache only describes the file it was written for, at that version."""
    return cache.module_file == str(promise.path) and cache.module_file_mtime == mtime


def read_json(path: Path) -> Any:
    """The file's JSON, None when missing or unreadable (a half-written run, an old format)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_result(path: Path) -> PromiseResult | None:
    """A stored promise result, None when missing or unreadable."""
    data = read_json(path)
    try:
        return PromiseResult.from_json(data) if isinstance(data, dict) else None
    except (KeyError, TypeError, ValueError):
        return None


def write_json(path: Path, data: Any, owner: tuple[int, int] | None = None) -> None:
    """Atomic, so readers (monitoring) never see half a file; `owner` (uid, gid) gets it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data), 0o644, owner)


def load_cache(path: Path, promise: PromiseFile, mtime: float) -> CacheEntry | None:
    data = read_json(path)
    try:
        cache = CacheEntry.from_json(data) if isinstance(data, dict) else None
    except (KeyError, TypeError, ValueError):
        return None
    return cache if cache and cache_is_current(cache, promise, mtime) else None
