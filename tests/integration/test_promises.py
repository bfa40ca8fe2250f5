"""Promises for real: child processes, timeouts that kill trees, parallelism, result files."""

from __future__ import annotations

import json
import logging
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from slapgrid.node.layout import PartitionPaths
from slapgrid.node.promises.results import ANOMALY, TEST
from slapgrid.node.promises.run import log_report, run_promises

pytestmark = pytest.mark.integration

PLUGIN_HEADER = "import time\nfrom slapgrid.node.promises.plugin_runner import Promise\n\n"


@pytest.fixture
def partition() -> Iterator[Path]:
    """A partition directory other users may traverse (for the owner tests)."""
    root = Path(tempfile.mkdtemp(prefix="promise", dir="/tmp"))
    root.chmod(0o755)
    path = root / "slappart0"
    path.mkdir(mode=0o750)
    yield path
    shutil.rmtree(root, ignore_errors=True)


def legacy(partition: Path, name: str, body: str) -> Path:
    path = partition / "etc" / "promise" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def plugin(
    partition: Path, name: str, sense: str, *, attributes: str = "", module: str = ""
) -> Path:
    """A plugin whose `sense()` body is `sense` (one line), with class `attributes`."""
    path = partition / "etc" / "plugin" / f"{name}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    source = f"{PLUGIN_HEADER}{module}\nclass RunPromise(Promise):\n"
    source += "".join(f"    {line}\n" for line in attributes.splitlines())
    source += f"    def sense(self):\n        {sense}\n"
    path.write_text(source)
    return path


def by_title(report) -> dict:
    return {result.title: result for result in report.results}


def test_legacy_ok_fail_and_timeout(partition: Path) -> None:
    legacy(partition, "ok", "echo all good; pwd >&2\n")
    legacy(partition, "fail", "echo broken >&2; exit 1\n")
    legacy(partition, "hang", "sleep 60 & echo $! > child.pid; sleep 60\n")
    started = time.monotonic()
    report = run_promises(partition, mode=TEST, timeout=1)
    elapsed = time.monotonic() - started

    results = by_title(report)
    assert (results["ok"].failed, results["ok"].message) == (False, f"all good\n{partition}")
    assert (results["fail"].failed, results["fail"].message) == (True, "broken")
    assert results["hang"].failed
    assert results["hang"].message == "Error: Promise timed out after 1 seconds"
    assert elapsed < 4
    child = int((partition / "child.pid").read_text())
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie"
    assert report.error_message == "Promise 'fail' failed with output: broken"


def test_each_result_is_one_log_line(partition: Path, caplog: pytest.LogCaptureFixture) -> None:
    legacy(partition, "ok", "echo fine\n")
    legacy(partition, "fail", "echo broken; exit 1\n")
    report = run_promises(partition, mode=TEST)
    with caplog.at_level(logging.INFO, logger="slapgrid.node.promises.run"):
        log_report(report, "slappart0")
    lines = sorted((r.levelname, r.getMessage(), r.partition) for r in caplog.records)
    assert lines == [
        ("ERROR", "Promise fail failed: broken", "slappart0"),
        ("INFO", "Promise ok kept: fine", "slappart0"),
    ]


def test_plugins_ok_fail_raise_hang_and_noise(partition: Path) -> None:
    ok = "print('noise'); self.logger.info('listening on %s', self.config['port'])"
    plugin(partition, "a_ok", ok)
    plugin(partition, "b_fail", "self.logger.error('disk full')")
    plugin(partition, "c_raise", "{}['missing']")
    plugin(partition, "d_hang", "time.sleep(60)")
    plugin(partition, "e_exit", "pass", module="import os\nos._exit(0)")

    report = run_promises(partition, mode=TEST, timeout=2, config={"port": "8080"})
    results = by_title(report)
    assert (results["a_ok"].failed, results["a_ok"].message) == (False, "listening on 8080")
    assert (results["b_fail"].failed, results["b_fail"].message) == (True, "disk full")
    assert results["c_raise"].failed
    assert results["c_raise"].message == "Error: KeyError: 'missing'"
    assert results["d_hang"].message == "Error: Promise timed out after 2 seconds"
    assert results["e_exit"].failed
    assert results["e_exit"].message.startswith("Error: No output returned by the promise")
    assert report.error_message == "Promise 'b_fail.py' failed with output: disk full"
    assert not (partition / "etc/plugin/__pycache__").exists()


def test_promises_run_in_parallel(partition: Path) -> None:
    for index in range(5):
        legacy(partition, f"legacy{index}", "sleep 1\n")
        plugin(partition, f"plugin{index}", "time.sleep(1)")
    started = time.monotonic()
    report = run_promises(partition, mode=TEST, max_workers=10)
    elapsed = time.monotonic() - started
    assert len(report.results) == 10 and not report.failed
    assert elapsed < 3.5, f"10 promises of 1 s took {elapsed:.2f} s"
    print(f"10 promises sleeping 1 s: {elapsed:.2f} s in parallel")


def test_result_files_and_anomaly_periodicity(partition: Path) -> None:
    plugin(partition, "slow", "self.logger.info('fine')", attributes="periodicity = 10")
    plugin(partition, "tested_only", "self.logger.info('up')", attributes="modes = ('test',)")
    legacy(partition, "legacy", "echo ok\n")

    report = run_promises(partition, mode=TEST)
    assert sorted(by_title(report)) == ["legacy", "slow", "tested_only"]
    stored = json.loads(PartitionPaths(partition).promise_result("slow").read_text())
    assert stored["title"] == "slow" and stored["name"] == "slow.py"
    assert stored["path"] == str(partition / "etc/plugin/slow.py")
    assert stored["result"]["type"] == "Test Result"
    assert stored["result"]["failed"] is False and stored["result"]["message"] == "fine"
    assert stored["execution-time"] > 0

    # anomaly mode: not due yet, the stored results are reused; test-only promises sit out
    tested_only_result = PartitionPaths(partition).promise_result("tested_only").read_text()
    report = run_promises(partition, mode=ANOMALY)
    assert sorted(by_title(report)) == ["legacy", "slow"]
    assert all(result.reused for result in report.results)
    assert PartitionPaths(partition).promise_result("tested_only").read_text() == tested_only_result

    # once due, the promise runs again and writes an anomaly result
    cache_file = partition / ".slapgrid/promise/cache/slow"
    cache = json.loads(cache_file.read_text())
    cache_file.write_text(json.dumps({**cache, "next_run_after": time.time() - 1}))
    report = run_promises(partition, mode=ANOMALY)
    assert not by_title(report)["slow"].reused
    assert json.loads(PartitionPaths(partition).promise_result("slow").read_text())["result"][
        "type"
    ] == ("Anomaly Result")


def test_failing_anomaly_may_bang_only_when_allowed(partition: Path) -> None:
    plugin(partition, "loud", "self.logger.error('down')", attributes="bang_on_failure = True")
    plugin(partition, "quiet", "self.logger.error('down')")
    assert run_promises(partition, mode=TEST).bang_message is None  # never after deployment
    for title in ("loud", "quiet"):
        (partition / ".slapgrid/promise/cache" / title).unlink()
    report = run_promises(partition, mode=ANOMALY)
    assert report.bang_message == "Promise loud is failing"


def _python_usable_by(uid: int) -> bool:
    """This sandbox may keep the agent's interpreter out of other users' reach."""
    try:
        probe = subprocess.run(
            [sys.executable, "-c", "import slapgrid"], user=uid, cwd="/", capture_output=True
        )
    except OSError:
        return False
    return probe.returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="only root switches users")
def test_promises_run_as_partition_owner(partition: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    legacy(partition, "whoami", "echo $(id -u) $HOME $USER; touch owned-by-me\n")
    if _python_usable_by(nobody.pw_uid):
        plugin(partition, "who", "self.logger.info(str(os.getuid()))", module="import os")
    for path in (partition, *partition.rglob("*")):
        os.chown(path, nobody.pw_uid, nobody.pw_gid)

    report = run_promises(partition, mode=TEST)
    results = by_title(report)
    assert results["whoami"].message == f"{nobody.pw_uid} {nobody.pw_dir} nobody"
    assert (partition / "owned-by-me").stat().st_uid == nobody.pw_uid
    if "who" in results:
        assert results["who"].message == str(nobody.pw_uid)
    result_dir = partition / ".slapgrid/promise/result"
    assert result_dir.stat().st_uid == nobody.pw_uid
    assert PartitionPaths(partition).promise_result("whoami").stat().st_uid == nobody.pw_uid
