"""The agent's memory across runs: failures for back-off, promise checks failed in a row
(to heal a partition that keeps failing), and the last run for `status`.

One small JSON file per root (`<root>/.slapgrid/state.json`), rewritten atomically, so a
crash leaves either the old or the new state and a restart keeps the back-off schedule.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Collection
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from slapgrid.node import layout
from slapgrid.node.files import atomic_write, read_text
from slapgrid.node.planner import FailedChecks, Failure

MAX_MESSAGE = 2000
T = TypeVar("T")


class StateStore:
    def __init__(self, root: Path) -> None:
        self.path = layout.state_file(root)
        self._lock = threading.Lock()
        self._data = self._load()

    def _load(self) -> dict[str, Any]:
        text = read_text(self.path)
        try:
            data = json.loads(text) if text else {}
        except ValueError:
            data = {}  # a corrupt state only costs an early retry
        if not isinstance(data, dict):
            data = {}
        data.setdefault("failures", {})
        return data

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(self._data, indent=1, sort_keys=True), 0o600)

    def _typed(self, name: str, kind: type[T]) -> dict[str, T]:
        """One section's entries as `kind`; an entry of an older format is skipped."""
        result = {}
        for key, entry in self._data.get(name, {}).items():
            try:
                result[key] = kind(**entry)
            except TypeError:
                continue
        return result

    def failures(self) -> dict[str, Failure]:
        return self._typed("failures", Failure)

    def record_failure(self, key: str, message: str, timestamp: str | None = None) -> Failure:
        with self._lock:
            previous = self._data["failures"].get(key, {})
            same = previous.get("timestamp") == timestamp
            failure = Failure(
                at=time.time(),
                attempts=(previous.get("attempts", 0) if same else 0) + 1,
                message=message[-MAX_MESSAGE:],
                timestamp=timestamp,
            )
            self._data["failures"][key] = asdict(failure)
            self._save()
            return failure

    def clear_failure(self, key: str) -> None:
        with self._lock:
            if self._data["failures"].pop(key, None) is not None:
                self._save()

    def keep_failures(self, keys: Collection[str]) -> None:
        """Forget the failures of every item but `keys`: the others are no longer wanted."""
        with self._lock:
            failures = self._data["failures"]
            stale = [key for key in failures if key not in keys]
            for key in stale:
                del failures[key]
            if stale:
                self._save()

    def failed_checks(self) -> dict[str, FailedChecks]:
        return self._typed("failed_checks", FailedChecks)

    def record_failed_check(self, pid: str, promise: str, message: str) -> FailedChecks:
        """One more periodic check of `pid` failed: the count goes up by one."""
        with self._lock:
            checks = self._data.setdefault("failed_checks", {})
            count = checks.get(pid, {}).get("count", 0) + 1
            failed = FailedChecks(count, promise, message[-MAX_MESSAGE:])
            checks[pid] = asdict(failed)
            self._save()
            return failed

    def clear_failed_checks(self, pid: str) -> None:
        """A check passed, or a deployment did: the count starts again from zero."""
        with self._lock:
            if self._data.get("failed_checks", {}).pop(pid, None) is not None:
                self._save()

    def record_run(self, kind: str, summary: dict[str, Any]) -> None:
        """Keep the last plan and outcome of a `software`/`instance`/`report` run."""
        with self._lock:
            self._data.setdefault("runs", {})[kind] = summary
            self._save()

    def record_origin(self, url: str, origin: str) -> None:
        """How a release was last installed: "from cache", or "built: <why not>"."""
        with self._lock:
            self._data.setdefault("origins", {})[url] = origin
            self._save()

    def origins(self) -> dict[str, str]:
        return dict(self._data.get("origins", {}))

    def runs(self) -> dict[str, Any]:
        return dict(self._data.get("runs", {}))
