"""Usage measured by the node itself, with psutil: CPU, memory, processes, disk.

A partition's processes are its supervisord group's pids and their descendants, plus, in
root mode, every process of the partition's own user.
"""

from __future__ import annotations

import os
import stat
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from slapgrid.node.report.environment import Environment
from slapgrid.slap.tioxml import Movement

CPU, MEMORY, DISK, PROCESSES = "CPU Consumption", "Memory Usage", "Disk Usage", "Process Count"


@dataclass(frozen=True)
class Usage:
    """What a partition used at measurement time (CPU time is cumulative, of live processes)."""

    partition_id: str
    cpu_seconds: float
    memory_bytes: int
    process_count: int
    disk_bytes: int


def usage_movements(usage: Usage) -> list[Movement]:
    """The four measured movements of a partition, units in title and category."""
    measured = (
        (CPU, f"{usage.cpu_seconds:.2f}", "CPU time (user + system), seconds", "unit/second"),
        (MEMORY, str(usage.memory_bytes), "Resident memory, bytes", "unit/byte"),
        (DISK, str(usage.disk_bytes), "Disk space of the partition, bytes", "unit/byte"),
        (PROCESSES, str(usage.process_count), "Processes running", "unit/process"),
    )
    return [
        Movement(resource, quantity, usage.partition_id, title, categories=(unit,))
        for resource, quantity, title, unit in measured
    ]


def dedicated_uid(partition_path: Path, env: Environment | None = None) -> int | None:
    """The partition's own uid when it has one (root mode), else None.

    In rootless mode every partition belongs to the agent's user: attributing by uid would
    count the agent and every other partition.
    """
    try:
        uid = partition_path.stat().st_uid
    except OSError:
        return None
    return None if uid in (0, (env or Environment.current()).euid) else uid


@dataclass(frozen=True)
class ProcessTable:
    """One pass over the process table, shared by every partition a run measures."""

    processes: Mapping[int, psutil.Process]
    children: Mapping[int, tuple[int, ...]]
    by_uid: Mapping[int, tuple[int, ...]]

    @classmethod
    def snapshot(cls) -> ProcessTable:
        processes: dict[int, psutil.Process] = {}
        children: dict[int, list[int]] = defaultdict(list)
        by_uid: dict[int, list[int]] = defaultdict(list)
        for process in psutil.process_iter(["ppid", "uids"]):
            if process.pid == os.getpid():
                continue
            processes[process.pid] = process
            ppid, uids = process.info["ppid"], process.info["uids"]
            if ppid is not None:
                children[ppid].append(process.pid)
            for uid in {uids.real, uids.effective} if uids is not None else ():
                by_uid[uid].append(process.pid)
        return cls(
            processes,
            {pid: tuple(kids) for pid, kids in children.items()},
            {uid: tuple(pids) for uid, pids in by_uid.items()},
        )

    def partition_processes(
        self, root_pids: Iterable[int], uid: int | None = None
    ) -> list[psutil.Process]:
        """`root_pids` and their descendants, plus every process of `uid`."""
        found: set[int] = set(self.by_uid.get(uid, ())) if uid is not None else set()
        pending = [pid for pid in root_pids if pid in self.processes]
        while pending:
            pid = pending.pop()
            if pid not in found:
                found.add(pid)
                pending.extend(self.children.get(pid, ()))
        return [self.processes[pid] for pid in sorted(found)]


def measure_processes(processes: Iterable[psutil.Process]) -> tuple[float, int, int]:
    """(CPU seconds, RSS bytes, count) of the processes still alive.

    CPU includes the reaped children of each process, which are no longer counted apart.
    """
    cpu, rss, count = 0.0, 0, 0
    for process in processes:
        try:
            with process.oneshot():
                times, memory = process.cpu_times(), process.memory_info()
        except psutil.Error:  # gone, zombie, or not ours to read
            continue
        cpu += times.user + times.system
        cpu += getattr(times, "children_user", 0.0) + getattr(times, "children_system", 0.0)
        rss += memory.rss
        count += 1
    return cpu, rss, count


def disk_usage(path: Path) -> int:
    """Bytes allocated under `path` (like `du -s`): symlinks not followed, hard links once."""
    try:
        top = os.lstat(path)
    except OSError:
        return 0
    total = _allocated(top)
    if not stat.S_ISDIR(top.st_mode):
        return total
    seen: set[tuple[int, int]] = set()
    pending = [os.fspath(path)]
    while pending:
        try:
            entries = os.scandir(pending.pop())
        except OSError:  # unreadable or gone: count what can be seen
            continue
        with entries:
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(info.st_mode):
                    pending.append(entry.path)
                elif info.st_nlink > 1:
                    if (info.st_dev, info.st_ino) in seen:
                        continue
                    seen.add((info.st_dev, info.st_ino))
                total += _allocated(info)
    return total


def _allocated(info: os.stat_result) -> int:
    blocks = getattr(info, "st_blocks", None)
    return blocks * 512 if blocks is not None else info.st_size


def measure_partition(
    partition_id: str,
    path: Path,
    root_pids: Iterable[int],
    table: ProcessTable | None = None,
    env: Environment | None = None,
) -> Usage:
    """`table`: a snapshot shared by the partitions of a run (taken now if not given)."""
    table = table or ProcessTable.snapshot()
    processes = table.partition_processes(root_pids, dedicated_uid(path, env))
    cpu, rss, count = measure_processes(processes)
    return Usage(partition_id, cpu, rss, count, disk_usage(path))
