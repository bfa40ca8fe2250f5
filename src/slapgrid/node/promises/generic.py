"""Plugins written for slapos.core, run as the reference agent runs them.

Software Releases built with `slapos.cookbook:promise.plugin` install plugins whose
`RunPromise` subclasses `slapos.grid.promise.generic.GenericPromise` from the release's *own*
slapos.core egg, which each plugin puts on `sys.path` (`sys.path[0:0] = [...]`). Only that
slapos.core can run them, so slapgrid hands them to its promise launcher (generic_launcher.py),
started with the release's Python (the interpreter of its `bin/buildout`) as the partition's
user, with the reference's configuration keys. The launcher keeps its own periodicity cache
and writes the results in the reference's place and shape; slapgrid reads them back.

A partition whose plugins are all of this kind is handed over whole, legacy promises
included, exactly as the reference would run it; in a partition that mixes them with
slapgrid's own plugins, the launcher runs only its plugins.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from slapgrid.node import layout, process
from slapgrid.node.promises.cache import read_json, read_result
from slapgrid.node.promises.check import Checker
from slapgrid.node.promises.discovery import PromiseFile
from slapgrid.node.promises.generic_launcher import MARK
from slapgrid.node.promises.results import TEST, PromiseResult

log = logging.getLogger(__name__)

LAUNCHER = Path(__file__).with_name("generic_launcher.py")
LAUNCHER_MARGIN = 10.0
"""Seconds the launcher gets beyond the promise timeout of each promise it runs."""


def software_python(software: Path | None) -> str | None:
    """The interpreter of the release's `bin/buildout`, through a `/bin/sh` exec wrapper
    for long paths; None when the release has no readable `bin/buildout`."""
    if software is None:
        return None
    try:
        with (software / "bin" / "buildout").open(errors="replace") as script:
            first, second = script.readline(), script.readline()
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    words = first[2:].split()
    if words == ["/bin/sh"]:
        try:
            wrapper = shlex.split(second)
        except ValueError:
            return None
        return wrapper[1] if len(wrapper) >= 2 and wrapper[0] == "exec" else None
    return words[0] if words else None


def plugin_sys_path(path: Path) -> list[str]:
    """The entries a plugin puts in front of `sys.path` (its release's eggs); [] if none."""
    try:
        tree = ast.parse(path.read_bytes(), str(path))
    except (OSError, SyntaxError, ValueError):
        return []
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and ast.unparse(node.targets[0]) in ("sys.path[0:0]", "sys.path[:0]")
        ):
            try:
                entries = ast.literal_eval(node.value)
            except ValueError:
                return []
            return [str(entry) for entry in entries if isinstance(entry, str)]
    return []


def _signature(path: Path) -> tuple[int, int] | None:
    """Changes whenever the launcher writes the file (it writes a new file and renames it)."""
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_ino, status.st_mtime_ns


def _written_at(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return float("inf")  # never ran: the launcher runs it anyway


def run_generic(
    checker: Checker,
    promises: Sequence[PromiseFile],
    *,
    software: Path | None,
    whole_partition: bool,
    fresh_after: float | None,
) -> list[PromiseResult]:
    """Run `promises` through the release's launcher; their results, in `promises` order.

    A promise the launcher did not run now (its periodicity has not elapsed) keeps its last
    result in anomaly mode. If the launcher itself fails, every promise it gave no result
    for fails with the launcher's reason.
    """
    paths = layout.PartitionPaths(checker.partition_path)
    before = {p.title: _signature(paths.promise_result(p.title)) for p in promises}
    stored = {p.title: read_result(paths.promise_result(p.title)) for p in promises}
    # a result from before the services last (re)started says nothing of them now
    force = checker.mode == TEST or (
        fresh_after is not None
        and any(_written_at(paths.promise_result(p.title)) < fresh_after for p in promises)
    )
    caches = {p.title: _launcher_cache(paths, p) for p in promises}
    if not force and all(_not_due(cache, time.time()) for cache in caches.values()):
        # what the launcher would do, without starting the release's Python for nothing
        return [
            replace(result, reused=True)
            for p in promises
            if (result := stored[p.title]) is not None and _checks_anomalies(caches[p.title])
        ]
    python = software_python(software)
    if python is None:
        log.warning(
            "%s: the Software Release has no bin/buildout to name its Python; running its "
            "slapos.core promises with slapgrid's",
            checker.partition_path.name,
        )
        python = sys.executable
    sys_path: list[str] = []
    for promise in promises:
        if promise.plugin:
            sys_path += [e for e in plugin_sys_path(promise.path) if e not in sys_path]
    only = None if whole_partition else [p.name for p in promises if p.plugin]
    request = {"sys_path": sys_path, "config": _launcher_config(checker, force, only)}
    try:
        done = checker.run(
            [python, "-s", "-B", str(LAUNCHER)],
            stdin=json.dumps(request).encode(),
            timeout=len(promises) * checker.timeout + LAUNCHER_MARGIN,
        )
    except process.ProcessError as exc:  # the release's Python is gone or not executable
        return _all_failed(promises, checker.mode, f"cannot run the release's Python: {exc}")
    if done.cancelled:
        return []
    log.debug("%s: the promise launcher said:\n%s", checker.partition_path.name, done.tail)
    reason = None
    if done.timed_out:
        reason = f"the promise launcher timed out after {done.timeout:g} seconds"
    elif done.returncode not in (0, 2):
        reason = _reason(done.tail) or f"the promise launcher exited with {done.returncode}"
    results = []
    for promise in promises:
        path = paths.promise_result(promise.title)
        fresh = _signature(path) != before[promise.title]
        result = read_result(path) if fresh else stored[promise.title]
        if reason is not None and not fresh:
            results += _all_failed([promise], checker.mode, reason)
        elif result is not None and fresh:
            results.append(result)
        elif (
            result is not None and checker.mode != TEST and _checks_anomalies(caches[promise.title])
        ):
            results.append(replace(result, reused=True))
    return results


def _all_failed(promises: Sequence[PromiseFile], mode: str, reason: str) -> list[PromiseResult]:
    return [
        PromiseResult.failure(p.title, p.name, str(p.path), mode, f"Error: {reason}")
        for p in promises
    ]


def _launcher_cache(paths: layout.PartitionPaths, promise: PromiseFile) -> dict[str, Any] | None:
    """What the launcher remembers of a promise (its `.slapgrid/promise/cache/<title>`), if
    it still stands: the promise's module exists and its file did not change since."""
    cache = read_json(paths.promise_cache(promise.title))
    if not isinstance(cache, dict):
        return None
    try:
        if not Path(cache["module_file"]).exists():
            return None
        if promise.path.stat().st_mtime > float(cache["timestamp"]):
            return None  # a deployment rewrote it: run it now
        float(cache["next_run_after"])
    except (KeyError, TypeError, ValueError, OSError):
        return None
    return cache


def _not_due(cache: dict[str, Any] | None, now: float) -> bool:
    return cache is not None and (
        not _checks_anomalies(cache) or now < float(cache["next_run_after"])
    )


def _checks_anomalies(cache: dict[str, Any] | None) -> bool:
    """Whether the promise takes part in the periodic check (unknown: it does)."""
    return cache is None or bool(cache.get("is_anomaly_detected", True))


def _launcher_config(checker: Checker, force: bool, only: list[str] | None) -> dict[str, Any]:
    """The reference's launcher keys; the agent's own (`partition-id`, …) come from config."""
    paths = layout.PartitionPaths(checker.partition_path)
    config: dict[str, Any] = {
        "promise-folder": str(paths.etc("plugin")),
        "legacy-promise-folder": str(paths.etc("promise")),
        "promise-timeout": checker.timeout,
        "partition-folder": str(checker.partition_path),
        "log-folder": str(paths.promise_dir / "log"),
        "force": force,
        "check-anomaly": checker.mode != TEST,
        **{key: value for key, value in checker.config.items() if value},
    }
    if only is not None:
        config["run-only-promise-list"] = only
    return config


def _reason(output: str) -> str | None:
    for line in reversed(output.splitlines()):
        if line.startswith(MARK):
            try:
                return str(json.loads(line[len(MARK) :]))
            except ValueError:
                return line[len(MARK) :]
    return None


def prepare_folders(partition: Path, owner: tuple[int, int] | None) -> None:
    """The launcher writes its state, cache, results and logs as the partition's user."""
    promise_dir = layout.PartitionPaths(partition).promise_dir
    for folder in (promise_dir, promise_dir / "cache", promise_dir / "result", promise_dir / "log"):
        folder.mkdir(parents=True, exist_ok=True)
        if owner is not None:
            os.chown(folder, *owner)
