"""What `slapgrid status` shows, gathered from disk and supervisord only (no master call)."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from slapgrid.errors import SlapgridError
from slapgrid.node import layout
from slapgrid.node.config import NodeConfig
from slapgrid.node.daemon.status_file import read_status as read_daemon_status
from slapgrid.node.files import read_text
from slapgrid.node.promises import run as promises
from slapgrid.node.promises.results import PromiseResult
from slapgrid.node.state import StateStore
from slapgrid.node.supervisor.control import Supervisor


def human_age(seconds: float) -> str:
    """`40 s`, `3 min`, `2 h`, `5 d`: what an operator reads at a glance."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f} {unit}"
    return f"{seconds:.0f} s"


@dataclass
class PartitionStatus:
    partition_id: str
    requested: str | None
    deployed_timestamp: str | None  # the master's timestamp it was deployed for
    title: str | None = None  # the instance it hosts, as the last instance run saw it
    software_release: str | None = None
    deployed_at: float | None = None  # when (epoch seconds): the `.timestamp` file's age
    processes: list[str] = field(default_factory=list)
    promises: list[str] = field(default_factory=list)
    last_error: str | None = None
    failed_checks: int = 0  # periodic checks failed in a row (a redeployment heals it)


@dataclass
class SoftwareStatus:
    name: str
    url: str | None
    built: bool
    last_error: str | None = None
    origin: str | None = None  # "from cache", or "built: <why not from the cache>"


@dataclass
class NodeStatus:
    software: list[SoftwareStatus]
    partitions: list[PartitionStatus]
    runs: dict[str, Any]
    supervisord: str
    daemon: dict[str, Any] | None = None  # `slapgrid node`'s status file, if it has one

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _software(config: NodeConfig) -> list[SoftwareStatus]:
    store = StateStore(config.software_root)
    failures, origins = store.failures(), store.origins()
    result = []
    if config.software_root.is_dir():
        for entry in sorted(os.scandir(config.software_root), key=lambda e: e.name):
            if not entry.is_dir() or len(entry.name) != 32:
                continue
            profile = read_text(config.software_root / entry.name / "buildout.cfg") or ""
            url = next(
                (
                    line.split("=", 1)[1].strip()
                    for line in profile.splitlines()
                    if line.startswith("extends")
                ),
                None,
            )
            failure = failures.get(url or "")
            result.append(
                SoftwareStatus(
                    entry.name,
                    url,
                    os.path.exists(os.path.join(entry.path, layout.COMPLETED)),
                    failure.message.strip().splitlines()[-1] if failure else None,
                    origins.get(url or ""),
                )
            )
    return result


def promise_line(result: PromiseResult, cached: bool, now: float) -> str:
    """`check-web ok (cached, 40 s old)`: how old the result is, and whether the last run
    only served it from cache."""
    age = result.age(now)
    facts = (["cached"] if cached else []) + ([] if age is None else [f"{human_age(age)} old"])
    detail = f" ({', '.join(facts)})" if facts else ""
    return f"{result.title} {'FAILED' if result.failed else 'ok'}{detail}"


def collect(config: NodeConfig) -> NodeStatus:
    store = StateStore(config.instance_root)
    failures = store.failures()
    checks = store.failed_checks()
    runs = store.runs()
    now = time.time()
    requested = {item["target"]: item["kind"] for item in runs.get("instance", {}).get("plan", [])}
    names = runs.get("instance", {}).get("instances", {})
    supervisor = Supervisor(config.instance_root)
    try:
        state = supervisor.state() or "not running"
    except SlapgridError:
        state = "not running"
    partitions = []
    for entry in sorted(os.scandir(config.instance_root), key=lambda e: e.name):
        is_partition = os.path.exists(os.path.join(entry.path, layout.RESOURCE_FILE))
        if not entry.is_dir() or not (is_partition or entry.name in requested):
            continue
        processes = []
        if state == "RUNNING":
            processes = [f"{p.name} {p.state}" for p in supervisor.process_info(entry.name)]
        cached = {
            item["title"]
            for item in runs.get("instance", {}).get("promises", {}).get(entry.name, [])
            if item.get("cached")
        }
        results = [
            promise_line(result, result.title in cached, now)
            for result in promises.last_results(entry.path)
        ]
        failure = failures.get(entry.name)
        failing = checks.get(entry.name)
        error = failure.message if failure else failing.message if failing else None
        timestamp_file = config.instance_root / entry.name / layout.TIMESTAMP
        timestamp = read_text(timestamp_file)
        hosted = names.get(entry.name) or {}
        partitions.append(
            PartitionStatus(
                entry.name,
                requested.get(entry.name),
                timestamp.strip() if timestamp else None,
                hosted.get("title") or None,
                hosted.get("software_release") or None,
                timestamp_file.stat().st_mtime if timestamp else None,
                processes,
                results,
                error.strip().splitlines()[-1] if error else None,
                failing.count if failing else 0,
            )
        )
    return NodeStatus(_software(config), partitions, runs, state, read_daemon_status(config))
