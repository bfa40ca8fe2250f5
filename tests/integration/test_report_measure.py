"""`slapgrid report` measuring for real: processes measured with psutil, disk usage on
disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from slapgrid.node.report.measure import (
    ProcessTable,
    dedicated_uid,
    disk_usage,
    measure_partition,
    measure_processes,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def busy_process() -> Iterator[subprocess.Popen[str]]:
    """A python that used CPU and 32 MiB, with a `sleep` child: a partition's service."""
    code = (
        "import subprocess, time\n"
        "child = subprocess.Popen(['sleep', '60'])\n"
        "memory = b'x' * (32 << 20)\n"
        "start = time.process_time()\n"
        "while time.process_time() - start < 0.3: pass\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
        yield process
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_processes_are_attributed_by_supervised_pid_and_descendants(
    busy_process: subprocess.Popen[str], tmp_path: Path
) -> None:
    processes = ProcessTable.snapshot().partition_processes([busy_process.pid, 0])
    names = {p.pid: p.name() for p in processes}
    assert len(names) == 2 and busy_process.pid in names
    assert [name for pid, name in names.items() if pid != busy_process.pid] == ["sleep"]

    cpu, rss, count = measure_processes(processes)
    assert cpu >= 0.25
    assert rss >= 32 << 20
    assert count == 2

    usage = measure_partition("slappart0", tmp_path, [busy_process.pid])
    assert (usage.process_count, usage.memory_bytes >= 32 << 20) == (2, True)
    assert dedicated_uid(tmp_path) is None  # the agent's own user: no attribution by uid


@pytest.mark.skipif(os.geteuid() != 0, reason="running a process as another user needs root")
def test_processes_of_a_dedicated_partition_user_are_attributed(tmp_path: Path) -> None:
    uid = 65534
    partition = tmp_path / "slappart0"
    partition.mkdir()
    os.chown(partition, uid, uid)
    sleeper = subprocess.Popen(["sleep", "60"], user=uid, group=uid)
    try:
        assert dedicated_uid(partition) == uid
        processes = ProcessTable.snapshot().partition_processes([], uid)
        assert sleeper.pid in {p.pid for p in processes}
        assert measure_partition("slappart0", partition, []).process_count >= 1
    finally:
        sleeper.kill()
        sleeper.wait()


def test_disk_usage_counts_hard_links_once_and_never_follows_symlinks(tmp_path: Path) -> None:
    partition = tmp_path / "slappart0"
    (partition / "a" / "b").mkdir(parents=True)
    (partition / "a" / "b" / "data").write_bytes(os.urandom(1 << 20))
    os.link(partition / "a" / "b" / "data", partition / "hard-link")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big").write_bytes(os.urandom(4 << 20))
    (partition / "dir-link").symlink_to(outside)
    (partition / "a" / "file-link").symlink_to(outside / "big")

    started = time.perf_counter()
    usage = disk_usage(partition)
    assert time.perf_counter() - started < 1
    assert 1 << 20 <= usage < (1 << 20) + (64 << 10)
    assert disk_usage(tmp_path / "missing") == 0
