"""Promises of a partition: health checks the Software Release ships, run by the agent.

* Plugin promises, `P/etc/plugin/*.py`: a `RunPromise` class (docs/promises.md), each run by
  slapgrid.node.promises.plugin_runner in its own process; plugins written for slapos.core
  (`GenericPromise`) are run by the release's own slapos.core instead (generic.py).
* Legacy promises, every executable of `P/etc/promise/`: exit 0 means kept, otherwise the
  merged output is the failure message.

All promises of a partition run at once (a bounded thread pool, one child process each), as the
partition's owner with cwd = P and a clean environment; a promise that outlives its timeout has
its whole process tree killed. Each result lands in `P/.slapgrid/promise/result/<title>.status.json`
(the reference's field names, so monitoring tools read it), each promise's memory (periodicity,
modes, recent runs) in `P/.slapgrid/promise/cache/<title>`.

Modes: "test" runs every promise that takes part in tests (after a deployment); "anomaly" runs
only the promises whose periodicity has elapsed and reuses the last result of the others.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from slapgrid.node import layout
from slapgrid.node.identity import RootGroup, run_as
from slapgrid.node.promises import generic
from slapgrid.node.promises.cache import (
    CacheEntry,
    Decision,
    decide,
    load_cache,
    read_json,
    read_result,
    still_fresh,
    write_json,
)
from slapgrid.node.promises.check import Checker
from slapgrid.node.promises.discovery import PromiseFile, discover
from slapgrid.node.promises.results import (
    ANOMALY,
    DEFAULT_PERIODICITY,
    MODES,
    RESULT_TYPES,
    TEST,
    PromiseReport,
    PromiseResult,
    format_date,
    truncate,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 20.0
DEFAULT_WORKERS = 8


def _execute(
    checker: Checker, promise: PromiseFile, fresh_after: float | None
) -> PromiseResult | None:
    """Run (or skip, or reuse) one promise and record its verdict."""
    try:
        mtime = promise.path.stat().st_mtime
    except OSError:
        return None  # vanished since discovery
    paths = layout.PartitionPaths(checker.partition_path)
    now = time.time()
    cache = load_cache(paths.promise_cache(promise.title), promise, mtime)
    stored = read_result(paths.promise_result(promise.title))
    usable = stored is not None and still_fresh(stored, cache, fresh_after)
    decision = decide(checker.mode, cache, now, usable)
    if decision is Decision.SKIP:
        return None
    if decision is Decision.REUSE and stored is not None:
        return replace(stored, reused=True)

    history = cache.history if cache else []
    date = format_date(now)
    started = time.monotonic()
    verdict = checker.check(promise, history, date)
    elapsed = time.monotonic() - started
    if checker.cancel is not None and checker.cancel.is_set():
        return None  # stopped by the agent: says nothing about the partition

    bang_on_failure = verdict.bang_on_failure
    if bang_on_failure is None:  # the promise did not say: keep what it said before
        bang_on_failure = bool(cache and cache.bang_on_failure)
    entry = CacheEntry(
        module_file=str(promise.path),
        module_file_mtime=mtime,
        modes=verdict.modes or (cache.modes if cache else MODES),
        periodicity=verdict.periodicity or (cache.periodicity if cache else DEFAULT_PERIODICITY),
        bang_on_failure=bang_on_failure,
        history=history,
    )
    if not verdict.ran:  # the promise does not take part in this mode
        entry.next_run_after = now
        write_json(paths.promise_cache(promise.title), entry.to_json(now))
        return None
    entry.next_run_after = now + entry.periodicity * 60
    assert verdict.sensed is not None  # a run always senses
    entry.history = [*history, [verdict.sensed.failed, truncate(verdict.sensed.message), date]]
    result = PromiseResult(
        title=promise.title,
        name=promise.name,
        path=str(promise.path),
        execution_time=round(elapsed, 3),
        type=RESULT_TYPES[checker.mode],
        failed=verdict.failed,
        date=date,
        message=truncate(verdict.message),
        bang=checker.mode == ANOMALY and entry.bang_on_failure and verdict.failed,
        tolerated=verdict.sensed.failed and not verdict.failed,
    )
    write_json(paths.promise_cache(promise.title), entry.to_json(now))
    write_json(  # the partition's monitoring reads it as the owner
        paths.promise_result(promise.title), result.to_json(), checker.user.file_owner
    )
    return result


def log_report(report: PromiseReport, partition_id: str) -> None:
    """One line per promise: kept (info), failed but tolerated by its verdict (warning),
    failed or still failing (error); a result served from cache says so, and its age."""
    extra = {"partition": partition_id}
    now = time.time()
    for result in report.results:
        cached = ""
        if result.reused:
            age = result.age(now)
            cached = " (cached, " + ("age unknown" if age is None else f"{age:.0f} s old") + ")"
        message = result.message or ""
        if result.tolerated:  # e.g. a legacy promise, an anomaly after 3 failed runs only
            log.warning(
                "Promise %s failed this run, not yet an anomaly: %s",
                result.title,
                message,
                extra=extra,
            )
        elif not result.failed:
            log.info("Promise %s kept%s: %s", result.title, cached, message, extra=extra)
        else:
            verb = "still failing" if result.reused else "failed"
            log.error(
                "Promise %s %s%s: %s", result.title, verb, cached, result.message, extra=extra
            )


def run_promises(
    partition_path: Path | str,
    *,
    mode: str = TEST,
    timeout: float = DEFAULT_TIMEOUT,
    uid: int | None = None,
    gid: int | None = None,
    max_workers: int = DEFAULT_WORKERS,
    config: Mapping[str, Any] | None = None,
    software: Path | None = None,
    cancel: threading.Event | None = None,
    fresh_after: float | None = None,
) -> PromiseReport:
    """Run the partition's promises in parallel and report their results.

    `uid`/`gid` default to the owner of the partition directory. `config` adds keys to what
    plugins receive (the agent passes partition-id, computer-id, master-url, partition-cert,
    partition-key). `software`: the partition's Software Release, whose Python and
    slapos.core run the plugins written for slapos.core.
    Setting `cancel` kills the running promises; what they were cut short at is not kept.
    `fresh_after`: when the services last (re)started; an older result is never reused.
    """
    if mode not in MODES:
        raise ValueError(f"unknown promise mode {mode!r}")
    partition_path = Path(partition_path).absolute()
    promises = discover(partition_path)
    if not promises:
        return PromiseReport()
    user = run_as(partition_path, RootGroup.ALLOW, uid=uid, gid=gid)
    checker = Checker(partition_path, mode, timeout, user, dict(config or {}), cancel)
    plugins = [promise for promise in promises if promise.plugin]
    # a release of slapos.core plugins only is handed over whole, legacy promises included
    whole = bool(plugins) and all(promise.generic for promise in plugins)
    handed = [p for p in promises if p.generic or (whole and not p.plugin)]
    own = [promise for promise in promises if promise not in handed]
    if handed:
        generic.prepare_folders(partition_path, user.file_owner)
    else:
        result_dir = layout.PartitionPaths(partition_path).promise_dir / "result"
        result_dir.mkdir(parents=True, exist_ok=True)
        if user.file_owner is not None:
            os.chown(result_dir, *user.file_owner)  # monitoring reads it as the owner

    def execute(batch: list[PromiseFile]) -> list[PromiseResult | None]:
        if batch is handed:
            ran = generic.run_generic(
                checker, handed, software=software, whole_partition=whole, fresh_after=fresh_after
            )
            return list(ran)
        return [_execute_safely(checker, batch[0], fresh_after)]

    batches = [[promise] for promise in own] + ([handed] if handed else [])
    workers = min(max_workers, len(batches))
    if workers <= 1:  # most partitions have one promise: no thread to start and join
        done = [execute(batch) for batch in batches]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            done = list(pool.map(execute, batches))
    by_title = {result.title: result for results in done for result in results if result}
    return PromiseReport(tuple(by_title[p.title] for p in promises if p.title in by_title))


def _execute_safely(
    checker: Checker, promise: PromiseFile, fresh_after: float | None
) -> PromiseResult | None:
    """A promise the engine cannot even run (or record) is a failed promise, not a crash."""
    try:
        return _execute(checker, promise, fresh_after)
    except Exception as exc:
        log.exception("Promise %s skipped", promise.title)
        return PromiseResult.failure(
            promise.title,
            promise.name,
            str(promise.path),
            checker.mode,
            f"Error: promise could not be run: {exc}",
        )


def last_results(partition_path: Path | str) -> list[PromiseResult]:
    """The stored result of every promise (by title), for `slapgrid status`."""
    results = []
    for path in sorted(
        (layout.PartitionPaths(Path(partition_path)).promise_dir / "result").glob("*.status.json")
    ):
        data = read_json(path)
        try:
            results.append(PromiseResult.from_json(data))
        except (KeyError, TypeError, ValueError):
            log.warning("Ignoring unreadable promise result %s", path)
    return results
