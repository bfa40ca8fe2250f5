"""Promises of a partition: health checks the Software Release ships, run by the agent.

* Plugin promises, `P/etc/plugin/*.py`: a `RunPromise` class (docs/promises.md), each run by
  slapgrid.node.promises.plugin_runner in its own process.
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

import json
import logging
import os
import pwd
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import slapgrid
from slapgrid.node import layout
from slapgrid.node.files import atomic_write
from slapgrid.node.process import kill_tree
from slapgrid.node.promises.plugin_runner import ANOMALY, DEFAULT_PERIODICITY, MODES, TEST

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 20.0
DEFAULT_WORKERS = 8
MESSAGE_LIMIT = 5000
HISTORY_LENGTH = 10
LEGACY_ANOMALY_RUNS = 3
"""A legacy promise is an anomaly only when its last 3 runs failed (it has no say of its own)."""
KILL_GRACE = 1.0
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RESULT_TYPES = {TEST: "Test Result", ANOMALY: "Anomaly Result"}
_PLUGIN_NAME = re.compile(r"^[A-Za-z_]\w*\.py$")
_SOURCE_DIR = str(Path(slapgrid.__file__).resolve().parents[1])


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class PromiseFile:
    """A promise found in the partition: `title` is its file name without extension."""

    name: str
    path: Path
    plugin: bool

    @property
    def title(self) -> str:
        return self.path.stem if self.plugin else self.name


@dataclass(frozen=True)
class PromiseResult:
    """One promise's outcome; `reused` when periodicity kept it from running this time."""

    title: str
    name: str
    path: str
    execution_time: float
    type: str
    failed: bool
    date: str
    message: str | None
    reused: bool = False
    bang: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "name": self.name,
            "path": self.path,
            "execution-time": self.execution_time,
            "result": {
                "type": self.type,
                "failed": self.failed,
                "date": self.date,
                "message": self.message,
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PromiseResult:
        result = data["result"]
        return cls(
            title=str(data["title"]),
            name=str(data["name"]),
            path=str(data["path"]),
            execution_time=float(data.get("execution-time", 0.0)),
            type=str(result["type"]),
            failed=bool(result["failed"]),
            date=str(result["date"]),
            message=None if result.get("message") is None else str(result["message"]),
        )


@dataclass(frozen=True)
class PromiseReport:
    """The results of one run, plugins first, each group in directory order."""

    results: tuple[PromiseResult, ...] = ()

    @property
    def failures(self) -> tuple[PromiseResult, ...]:
        return tuple(result for result in self.results if result.failed)

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    @property
    def error_message(self) -> str | None:
        """`Promise '<name>' failed with output: …` for the first failure, else None."""
        if not self.failures:
            return None
        first = self.failures[0]
        return f"Promise '{first.name}' failed with output: {first.message or ''}"

    @property
    def bang_message(self) -> str | None:
        """What to bang with when a failing anomaly check allows it (first one only)."""
        for result in self.failures:
            if result.bang:
                return f"Promise {result.title} is failing"
        return None


@dataclass
class CacheEntry:
    """What the engine remembers of a promise between runs (JSON in the cache folder).

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
        )


# --------------------------------------------------------------------------- decisions


def plan(mode: str, cache: CacheEntry | None, now: float, has_result: bool) -> str:
    """ "run", "skip" (the promise does not take part in this mode) or "reuse" (not due yet)."""
    if cache is None:
        return "run"
    if mode not in cache.modes:
        return "skip"
    if mode == ANOMALY and now < cache.next_run_after and has_result:
        return "reuse"
    return "run"


def cache_is_current(cache: CacheEntry, promise: PromiseFile, mtime: float) -> bool:
    """A cache only describes the file it was written for, at that version."""
    return cache.module_file == str(promise.path) and cache.module_file_mtime == mtime


def legacy_verdict(mode: str, runs: Sequence[Sequence[Any]]) -> tuple[bool, str | None]:
    """Test: the last run decides. Anomaly: only the last LEGACY_ANOMALY_RUNS all failing."""
    failed, message = bool(runs[-1][0]), runs[-1][1]
    if mode == ANOMALY:
        recent = runs[-LEGACY_ANOMALY_RUNS:]
        failed = len(recent) == LEGACY_ANOMALY_RUNS and all(run[0] for run in recent)
    return failed, message


def truncate(message: str | None) -> str | None:
    if message is None or len(message) <= MESSAGE_LIMIT:
        return message
    return "..." + message[-MESSAGE_LIMIT:]


def format_date(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(epoch))


def discover(partition_path: Path) -> list[PromiseFile]:
    """Plugins (`etc/plugin/*.py`) then legacy executables (`etc/promise/*`), each sorted."""
    found: list[PromiseFile] = []
    plugin_dir = layout.PartitionPaths(Path(partition_path)).etc("plugin")
    for name in _listdir(plugin_dir):
        if _PLUGIN_NAME.match(name) and not name.startswith("__init__"):
            found.append(PromiseFile(name, plugin_dir / name, plugin=True))
    legacy_dir = layout.PartitionPaths(Path(partition_path)).etc("promise")
    for name in _listdir(legacy_dir):
        path = legacy_dir / name
        if path.is_file() and os.access(path, os.X_OK):
            found.append(PromiseFile(name, path, plugin=False))
        else:
            log.warning("Bad promise file at %s: not an executable file", path)
    return found


def _listdir(directory: Path) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []


# --------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class Identity:
    """Who promises run as: uid/gid to switch to (None: stay), and their environment."""

    uid: int | None
    gid: int | None
    name: str | None  # the account, when it exists: its supplementary groups come along
    env: Mapping[str, str]

    def groups(self) -> list[int] | None:
        """Looked up when a promise starts: most checks only reuse a recent result."""
        if self.uid is None or self.gid is None:
            return None
        return os.getgrouplist(self.name, self.gid) if self.name else [self.gid]


def identity_for(partition_path: Path, uid: int | None = None, gid: int | None = None) -> Identity:
    """The partition owner (from the directory unless given); a switch only when root.

    A root-owned partition runs its promises as the agent, like the reference.
    """
    if uid is None or gid is None:
        info = Path(partition_path).stat()
        uid = info.st_uid if uid is None else uid
        gid = info.st_gid if gid is None else gid
    try:
        entry = pwd.getpwuid(uid)
        name, home = entry.pw_name, entry.pw_dir
    except KeyError:
        entry, name, home = None, str(uid), str(partition_path)
    env = {"PATH": CLEAN_PATH, "HOME": home, "USER": name, "LOGNAME": name, "LANG": "C.UTF-8"}
    if os.geteuid() != 0 or uid == 0:
        return Identity(None, None, None, env)
    return Identity(uid, gid, name if entry else None, env)


@dataclass(frozen=True)
class Completed:
    returncode: int | None  # None: killed after the timeout
    stdout: str
    stderr: str


def run_bounded(
    argv: Sequence[str],
    *,
    cwd: Path,
    identity: Identity,
    timeout: float,
    stdin: bytes | None = None,
    merge_stderr: bool = False,
    extra_env: Mapping[str, str] | None = None,
) -> Completed:
    """Run a child in its own session as `identity`; kill its tree after `timeout` seconds."""
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        env={**identity.env, **(extra_env or {})},
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        user=identity.uid,
        group=identity.gid,
        extra_groups=identity.groups(),
        start_new_session=True,
    )
    try:
        out, err = process.communicate(stdin, timeout=timeout)
        returncode: int | None = process.returncode
    except subprocess.TimeoutExpired:
        kill_tree(process.pid, grace=KILL_GRACE)
        try:
            out, err = process.communicate(timeout=KILL_GRACE)
        except subprocess.TimeoutExpired:  # an escaped grandchild still holds the pipes
            process.kill()
            out, err = b"", b""
        returncode = None
    return Completed(returncode, _decode(out), _decode(err))


def _decode(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", "replace")


# --------------------------------------------------------------------------- engine


@dataclass(frozen=True)
class _Context:
    partition_path: Path
    mode: str
    timeout: float
    identity: Identity
    config: Mapping[str, Any]
    python: str

    @property
    def paths(self) -> layout.PartitionPaths:
        return layout.PartitionPaths(self.partition_path)


def _write_json(path: Path, data: Any, owner: Identity | None = None) -> None:
    """Atomic, so readers (monitoring) never see half a file; owned by the partition."""
    path.parent.mkdir(parents=True, exist_ok=True)
    chown = None
    if owner is not None and owner.uid is not None:
        chown = (owner.uid, owner.gid if owner.gid is not None else -1)
    atomic_write(path, json.dumps(data), 0o644, chown)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _load_cache(ctx: _Context, promise: PromiseFile, mtime: float) -> CacheEntry | None:
    data = _read_json(ctx.paths.promise_cache(promise.title))
    try:
        cache = CacheEntry.from_json(data) if isinstance(data, dict) else None
    except (KeyError, TypeError, ValueError):
        return None
    return cache if cache and cache_is_current(cache, promise, mtime) else None


def _load_result(ctx: _Context, promise: PromiseFile) -> PromiseResult | None:
    data = _read_json(ctx.paths.promise_result(promise.title))
    try:
        return PromiseResult.from_json(data) if isinstance(data, dict) else None
    except (KeyError, TypeError, ValueError):
        return None


def _run_plugin(
    ctx: _Context, promise: PromiseFile, history: list[list[Any]], date: str
) -> dict[str, Any]:
    config = {
        "path": str(promise.path),
        "name": promise.name,
        "title": promise.title,
        "partition-folder": str(ctx.partition_path),
        "promise-timeout": ctx.timeout,
        **ctx.config,
    }
    request = {
        "path": str(promise.path),
        "mode": ctx.mode,
        "date": date,
        "config": config,
        "history": history,
    }
    done = run_bounded(
        [ctx.python, "-s", "-B", "-P", "-m", "slapgrid.node.promises.plugin_runner"],
        cwd=ctx.partition_path,
        identity=ctx.identity,
        timeout=ctx.timeout,
        stdin=json.dumps(request).encode(),
        extra_env={"PYTHONPATH": _SOURCE_DIR},
    )
    if done.returncode is None:
        return _timed_out(ctx, date)
    lines = done.stdout.strip().splitlines()
    try:
        outcome = json.loads(lines[-1])
        outcome["sensed"] = outcome.get("sensed") or [True, None, date]
        return outcome
    except (IndexError, ValueError, TypeError):
        detail = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        message = f"Error: No output returned by the promise ({detail[0]})"
        return {"ran": True, "failed": True, "message": message, "sensed": [True, message, date]}


def _run_legacy(
    ctx: _Context, promise: PromiseFile, history: list[list[Any]], date: str
) -> dict[str, Any]:
    try:
        done = run_bounded(
            [str(promise.path)],
            cwd=ctx.partition_path,
            identity=ctx.identity,
            timeout=ctx.timeout,
            merge_stderr=True,
        )
    except OSError as exc:
        message = f"Error: cannot run promise: {exc}"
        return {"ran": True, "failed": True, "message": message, "sensed": [True, message, date]}
    if done.returncode is None:
        return _timed_out(ctx, date)
    sensed = [done.returncode != 0, done.stdout.strip() or None, date]
    failed, message = legacy_verdict(ctx.mode, [*history, sensed])
    return {"ran": True, "failed": failed, "message": message, "sensed": sensed}


def _timed_out(ctx: _Context, date: str) -> dict[str, Any]:
    message = f"Error: Promise timed out after {ctx.timeout:g} seconds"
    return {"ran": True, "failed": True, "message": message, "sensed": [True, message, date]}


def _execute(ctx: _Context, promise: PromiseFile) -> PromiseResult | None:
    """Run (or skip, or reuse) one promise and record its outcome."""
    try:
        mtime = promise.path.stat().st_mtime
    except OSError:
        return None  # vanished since discovery
    now = time.time()
    cache = _load_cache(ctx, promise, mtime)
    stored = _load_result(ctx, promise)
    decision = plan(ctx.mode, cache, now, stored is not None)
    if decision == "skip":
        return None
    if decision == "reuse" and stored is not None:
        return replace(stored, reused=True)

    history = cache.history if cache else []
    date = format_date(now)
    started = time.monotonic()
    runner = _run_plugin if promise.plugin else _run_legacy
    outcome = runner(ctx, promise, history, date)
    elapsed = time.monotonic() - started

    entry = CacheEntry(
        module_file=str(promise.path),
        module_file_mtime=mtime,
        modes=tuple(outcome.get("modes") or (cache.modes if cache else MODES)),
        periodicity=float(
            outcome.get("periodicity") or (cache.periodicity if cache else DEFAULT_PERIODICITY)
        ),
        bang_on_failure=bool(outcome.get("bang_on_failure", cache and cache.bang_on_failure)),
        history=history,
    )
    if not outcome.get("ran", True):  # the promise does not take part in this mode
        entry.next_run_after = now
        _write_json(
            ctx.paths.promise_cache(promise.title),
            entry.to_json(now),
        )
        return None
    entry.next_run_after = now + entry.periodicity * 60
    entry.history = [*history, [bool(outcome["sensed"][0]), truncate(outcome["sensed"][1]), date]]
    result = PromiseResult(
        title=promise.title,
        name=promise.name,
        path=str(promise.path),
        execution_time=round(elapsed, 3),
        type=RESULT_TYPES[ctx.mode],
        failed=bool(outcome["failed"]),
        date=date,
        message=truncate(outcome.get("message")),
        bang=ctx.mode == ANOMALY and entry.bang_on_failure and bool(outcome["failed"]),
    )
    _write_json(ctx.paths.promise_cache(promise.title), entry.to_json(now))
    _write_json(
        ctx.paths.promise_result(promise.title),
        result.to_json(),
        ctx.identity,
    )
    return result


def log_report(report: PromiseReport, partition_id: str) -> None:
    """One line per promise: kept (info), failed or still failing (error)."""
    extra = {"partition": partition_id}
    for result in report.results:
        if not result.failed:
            log.info("Promise %s kept: %s", result.title, result.message or "", extra=extra)
        else:
            verb = "still failing" if result.reused else "failed"
            log.error("Promise %s %s: %s", result.title, verb, result.message, extra=extra)


def run_promises(
    partition_path: Path | str,
    *,
    mode: str = TEST,
    timeout: float = DEFAULT_TIMEOUT,
    uid: int | None = None,
    gid: int | None = None,
    max_workers: int = DEFAULT_WORKERS,
    config: Mapping[str, Any] | None = None,
    python: str | None = None,
) -> PromiseReport:
    """Run the partition's promises in parallel and report their results.

    `uid`/`gid` default to the owner of the partition directory. `config` adds keys to what
    plugins receive (the agent passes partition-id, computer-id, master-url, partition-cert,
    partition-key). `python` runs the plugin runner (default: the agent's interpreter).
    """
    if mode not in MODES:
        raise ValueError(f"unknown promise mode {mode!r}")
    partition_path = Path(partition_path).absolute()
    promises = discover(partition_path)
    if not promises:
        return PromiseReport()
    identity = identity_for(partition_path, uid, gid)
    result_dir = layout.PartitionPaths(partition_path).promise_dir / "result"
    result_dir.mkdir(parents=True, exist_ok=True)
    if identity.uid is not None:
        os.chown(result_dir, identity.uid, identity.gid or -1)  # monitoring reads it as the owner
    ctx = _Context(
        partition_path, mode, timeout, identity, dict(config or {}), python or sys.executable
    )
    workers = min(max_workers, len(promises))
    if workers <= 1:  # most partitions have one promise: no thread to start and join
        outcomes = [_execute_safely(ctx, promise) for promise in promises]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            outcomes = list(pool.map(lambda promise: _execute_safely(ctx, promise), promises))
    return PromiseReport(tuple(result for result in outcomes if result is not None))


def _execute_safely(ctx: _Context, promise: PromiseFile) -> PromiseResult | None:
    """A promise the engine cannot even run (or record) is a failed promise, not a crash."""
    try:
        return _execute(ctx, promise)
    except Exception as exc:
        log.exception("Promise %s skipped", promise.title)
        return PromiseResult(
            title=promise.title,
            name=promise.name,
            path=str(promise.path),
            execution_time=0.0,
            type=RESULT_TYPES[ctx.mode],
            failed=True,
            date=format_date(time.time()),
            message=f"Error: promise could not be run: {exc}",
        )


def last_results(partition_path: Path | str) -> list[PromiseResult]:
    """The stored result of every promise (by title), for `slapgrid status`."""
    results = []
    for path in sorted(
        (layout.PartitionPaths(Path(partition_path)).promise_dir / "result").glob("*.status.json")
    ):
        data = _read_json(path)
        try:
            results.append(PromiseResult.from_json(data))
        except (KeyError, TypeError, ValueError):
            log.warning("Ignoring unreadable promise result %s", path)
    return results
