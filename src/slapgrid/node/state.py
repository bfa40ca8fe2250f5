"""The agent's memory across runs: failures for back-off, and the last run for `status`.

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
from typing import Any

from slapgrid.node import layout
from slapgrid.node.files import atomic_write, read_text
from slapgrid.node.planner import Failure

MAX_MESSAGE = 2000


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

    def failures(self) -> dict[str, Failure]:
        result = {}
        for key, entry in self._data["failures"].items():
            try:
                result[key] = Failure(**entry)
            except TypeError:
                continue
        return result

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

    def record_run(self, kind: str, summary: dict[str, Any]) -> None:
        """Keep the last plan and outcome of a `software`/`instance`/`report` run."""
        with self._lock:
            self._data.setdefault("runs", {})[kind] = summary
            self._save()

    def runs(self) -> dict[str, Any]:
        return dict(self._data.get("runs", {}))
