"""Running one check of a promise, legacy or plugin, through the agent's child runner."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import slapgrid
from slapgrid.node import process
from slapgrid.node.identity import RunAs
from slapgrid.node.promises.discovery import PromiseFile
from slapgrid.node.promises.results import ANOMALY, Run, Verdict

KILL_GRACE = 1.0
"""Seconds a promise past its timeout gets on SIGTERM before its tree is killed."""
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LEGACY_ANOMALY_RUNS = 3
"""A legacy promise is an anomaly only when its last 3 runs failed (it has no say of its own)."""
_SOURCE_DIR = str(Path(slapgrid.__file__).resolve().parents[1])


@dataclass(frozen=True)
class Checker:
    """How every promise of one partition is checked: as its owner, in a fixed environment."""

    partition_path: Path
    mode: str
    timeout: float
    user: RunAs
    config: Mapping[str, Any]
    cancel: threading.Event | None = None  # set: running promises are killed (Ctrl-C)

    @property
    def environment(self) -> dict[str, str]:
        owner = self.user.owner
        return {
            "PATH": CLEAN_PATH,
            "HOME": owner.home,
            "USER": owner.name,
            "LOGNAME": owner.name,
            "LANG": "C.UTF-8",
        }

    def run(
        self,
        argv: Sequence[str],
        stdin: bytes | None = None,
        timeout: float | None = None,
        **env: str,
    ) -> process.ProcessResult:
        return process.run(
            argv,
            cwd=self.partition_path,
            home=self.user.owner.home,
            user=self.user,
            umask=process.INHERIT_UMASK,
            environment={**self.environment, **env},
            stdin=stdin,
            timeout=self.timeout if timeout is None else timeout,
            timeout_grace=KILL_GRACE,
            cancel=self.cancel,
        )

    def timed_out(self, date: str) -> Verdict:
        return Verdict.error(f"Error: Promise timed out after {self.timeout:g} seconds", date)

    def check(self, promise: PromiseFile, history: list[list[Any]], date: str) -> Verdict:
        """Run the promise once; whatever goes wrong is a failed verdict, never a raise."""
        if promise.plugin:
            return self.check_plugin(promise, history, date)
        return self.check_legacy(promise, history, date)

    def check_plugin(self, promise: PromiseFile, history: list[list[Any]], date: str) -> Verdict:
        """In its own process (plugin_runner), which prints the verdict as its last line."""
        config = {
            "path": str(promise.path),
            "name": promise.name,
            "title": promise.title,
            "partition-folder": str(self.partition_path),
            "promise-timeout": self.timeout,
            **self.config,
        }
        request = {
            "path": str(promise.path),
            "mode": self.mode,
            "date": date,
            "config": config,
            "history": history,
        }
        done = self.run(
            [sys.executable, "-s", "-B", "-P", "-m", "slapgrid.node.promises.plugin_runner"],
            stdin=json.dumps(request).encode(),
            PYTHONPATH=_SOURCE_DIR,
        )
        if done.timed_out:
            return self.timed_out(date)
        lines = done.tail.strip().splitlines()
        try:
            verdict = Verdict.from_json(json.loads(lines[-1]))
        except (IndexError, ValueError, TypeError, AttributeError):
            detail = lines[-1:] or [f"exit status {done.returncode}"]
            return Verdict.error(f"Error: No output returned by the promise ({detail[0]})", date)
        if verdict.sensed is None and verdict.ran:
            return replace(verdict, sensed=Run(True, None, date))
        return verdict

    def check_legacy(self, promise: PromiseFile, history: list[list[Any]], date: str) -> Verdict:
        """An executable: exit 0 means kept, else its merged output is the failure message."""
        try:
            done = self.run([str(promise.path)])
        except process.ProcessError as exc:
            return Verdict.error(f"Error: cannot run promise: {exc}", date)
        if done.timed_out:
            return self.timed_out(date)
        sensed = Run(done.returncode != 0, done.tail.strip() or None, date)
        failed, message = legacy_verdict(self.mode, [*history, list(sensed)])
        return Verdict(failed, message, sensed)


def legacy_verdict(mode: str, runs: Sequence[Sequence[Any]]) -> tuple[bool, str | None]:
    """Test: the last run decides. Anomaly: only the last LEGACY_ANOMALY_RUNS all failing."""
    failed, message = bool(runs[-1][0]), runs[-1][1]
    if mode == ANOMALY:
        recent = runs[-LEGACY_ANOMALY_RUNS:]
        failed = len(recent) == LEGACY_ANOMALY_RUNS and all(run[0] for run in recent)
    return failed, message
