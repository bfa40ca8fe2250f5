"""Run one plugin promise in its own process: `python -m slapgrid.node.promises.plugin_runner`.

The engine (slapgrid.node.promises.plugin) starts this module as the partition's owner, with cwd =
the partition, writes one JSON request on stdin and reads one JSON `Verdict` from the last line
of the output. Whatever the plugin prints goes to stderr, and the verdict starts a line of its
own, so prints cannot corrupt it; whatever the plugin raises becomes a failed verdict. The
plugin interface is documented in docs/promises.md.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from slapgrid.node.promises.results import DEFAULT_PERIODICITY, MODES, Run, Verdict


class Promise:
    """Optional base class of a plugin's `RunPromise` (any class with the same shape works)."""

    periodicity: float = DEFAULT_PERIODICITY
    """Minutes between two runs in anomaly mode (test mode always runs)."""
    modes: tuple[str, ...] = MODES
    """The modes this promise takes part in: "test" (after deployment), "anomaly" (later)."""
    bang_on_failure: bool = False
    """Whether a failing anomaly check may ask the master to redeploy the instance tree."""

    def __init__(self, config: Mapping[str, Any], logger: logging.Logger) -> None:
        self.config = config
        self.logger = logger

    def sense(self) -> None:
        """Check something; log ERROR (or CRITICAL) on failure, INFO on success."""
        raise NotImplementedError

    def test(self, runs: Sequence[Run]) -> tuple[bool, str | None]:
        """Verdict after deployment from the runs so far (oldest first, this one last)."""
        return runs[-1].failed, runs[-1].message

    def anomaly(self, runs: Sequence[Run]) -> tuple[bool, str | None]:
        """Verdict of the periodic check, same input as `test`."""
        return runs[-1].failed, runs[-1].message


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _sensed(records: Sequence[logging.LogRecord], date: str) -> Run:
    errors = [r.getMessage() for r in records if r.levelno >= logging.ERROR]
    lines = errors or [r.getMessage() for r in records]
    return Run(bool(errors), "\n".join(lines) or None, date)


def _load(path: Path) -> tuple[type, dict[str, Any]]:
    """The plugin's `RunPromise` and its `extra_config_dict` (keys the profile gave it)."""
    name = "slapgrid_promise_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    cls = getattr(module, "RunPromise", None)
    if not isinstance(cls, type):
        raise ImportError(f"{path.name} defines no RunPromise class")
    extra = getattr(module, "extra_config_dict", {})
    if not isinstance(extra, dict):
        raise TypeError(f"{path.name}: extra_config_dict is not a dict")
    return cls, extra


def _verdict(value: Any, sensed: Run) -> tuple[bool, str | None]:
    if value is None:
        return sensed.failed, sensed.message
    failed, message = value
    return bool(failed), None if message is None else str(message)


def run(request: Mapping[str, Any]) -> Verdict:
    """Load, sense and judge one promise; the verdict the engine expects (never raises)."""
    path = Path(request["path"])
    handler = _Records()
    logger = logging.getLogger(f"promise.{path.stem}")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        return _run(path, request, logger, handler)
    finally:
        logger.removeHandler(handler)


def _run(
    path: Path, request: Mapping[str, Any], logger: logging.Logger, handler: _Records
) -> Verdict:
    mode, date = request["mode"], request["date"]
    said: dict[str, Any] = {"modes": MODES}
    try:
        cls, extra = _load(path)
        config = request.get("config", {})
        clash = sorted(set(extra) & set(config))
        if clash:  # the agent's keys are not the profile's to change
            raise ValueError(f"extra_config_dict may not set {', '.join(clash)}")
        promise = cls({**config, **extra}, logger)
        modes = tuple(m for m in getattr(promise, "modes", MODES) if m in MODES)
        periodicity = float(getattr(promise, "periodicity", DEFAULT_PERIODICITY))
        if not modes or periodicity <= 0:
            raise ValueError("a promise needs at least one mode and a periodicity above 0")
        said = {
            "modes": modes,
            "periodicity": periodicity,
            "bang_on_failure": bool(getattr(promise, "bang_on_failure", False)),
        }
        if mode not in modes:
            return Verdict(False, None, None, ran=False, **said)
        promise.sense()
    except (Exception, SystemExit) as exc:
        traceback.print_exc()
        return Verdict.error(f"Error: {type(exc).__name__}: {exc}", date, **said)
    sensed = _sensed(handler.records, date)
    runs = [Run(*item) for item in request.get("history", [])] + [sensed]
    try:
        judge = getattr(promise, mode, None)
        failed, message = _verdict(judge(runs) if judge else None, sensed)
    except Exception as exc:
        traceback.print_exc()
        failed, message = True, f"Error: {mode}() raised {type(exc).__name__}: {exc}"
    return Verdict(failed, message, sensed, **said)


def main() -> None:
    request = json.load(sys.stdin)
    sys.path.insert(0, str(Path(request["path"]).parent))  # helpers next to plugins import
    result_fd = os.dup(1)
    os.dup2(2, 1)  # the plugin's prints land on stderr, never in the verdict
    verdict = run(request)
    sys.stdout.flush()
    os.write(result_fd, b"\n" + json.dumps(verdict.to_json()).encode() + b"\n")


if __name__ == "__main__":
    main()
