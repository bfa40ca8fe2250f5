"""The node supervisord for real: launch, groups, reload, restarts, offline start, supervisorctl."""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from slapgrid.node.supervisor.control import ReloadSummary, Supervisor
from slapgrid.node.supervisor.errors import SupervisorError
from support.waiting import wait_for

pytestmark = pytest.mark.integration

SERVICE = "#!/bin/sh\necho started as $(id -u) HOME=$HOME USER=$USER\nexec sleep 300\n"


def script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def instance_root() -> Iterator[Path]:
    """A short path (unix socket names are limited) others may traverse (user= tests)."""
    root = Path(tempfile.mkdtemp(prefix="sv", dir="/tmp"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def supervisor(instance_root: Path) -> Iterator[Supervisor]:
    sv = Supervisor(instance_root)
    sv.ensure_config("http://127.0.0.1:9", "COMP-TEST")
    try:
        yield sv
    finally:
        sv.shutdown()
    assert not sv.is_running()


@pytest.fixture
def partition(instance_root: Path) -> Path:
    path = instance_root / "slappart0"
    script(path / "etc/service/web", SERVICE)
    script(path / "etc/run/once", "#!/bin/sh\necho ran > ran.txt\n")
    return path


def states(sv: Supervisor, pid: str) -> dict[str, str]:
    return {info.name: info.state for info in sv.process_info(pid)}


def running_pid(sv: Supervisor, pid: str, name: str, not_pid: int = 0) -> int:
    """The pid of a RUNNING process (other than `not_pid`), waiting for it."""

    def find() -> int:
        infos = sv.process_info(pid)
        return next((i.pid for i in infos if i.name == name and i.state == "RUNNING"), 0)

    return wait_for(lambda: find() not in (0, not_pid) and find(), what=f"{pid}:{name} running")


def test_launch_is_fast_and_idempotent(supervisor: Supervisor) -> None:
    started = time.monotonic()
    supervisor.ensure_running()
    elapsed = time.monotonic() - started
    daemon = psutil.Process(int(supervisor.paths.pid_file.read_text()))
    supervisor.ensure_running()
    assert int(supervisor.paths.pid_file.read_text()) == daemon.pid  # no second daemon
    assert daemon.is_running()
    assert (supervisor.paths.socket.stat().st_mode & 0o777) == 0o700
    assert set(daemon.environ()) == {"PATH"}  # a scrubbed environment
    wait_for(lambda: states(supervisor, "watchdog") == {"watchdog": "RUNNING"})
    assert elapsed < 5, f"supervisord took {elapsed:.2f} s to start"
    print(f"supervisord start: {elapsed:.3f} s")


def test_start_then_stop_partition(supervisor: Supervisor, partition: Path) -> None:
    supervisor.ensure_running()
    assert supervisor.write_partition("slappart0", partition)
    assert supervisor.reload() == ReloadSummary(added=("slappart0",))
    assert states(supervisor, "slappart0") == {"once": "STOPPED", "web-on-watch": "STOPPED"}

    supervisor.start_partition("slappart0")
    service = psutil.Process(running_pid(supervisor, "slappart0", "web-on-watch"))
    wait_for(lambda: states(supervisor, "slappart0")["once"] == "EXITED")
    assert (partition / "ran.txt").read_text() == "ran\n"
    assert service.cwd() == str(partition)
    me = pwd.getpwuid(os.geteuid())
    log = wait_for(lambda: (partition / ".slappart0_web.log").read_text())
    assert f"started as {me.pw_uid} HOME={me.pw_dir} USER={me.pw_name}" in log

    supervisor.stop_partition("slappart0")
    assert not supervisor.partition_conf("slappart0").exists()
    assert supervisor.process_info("slappart0") == []
    wait_for(lambda: not service.is_running(), timeout=5)
    supervisor.start_partition("slappart0")  # unknown group: nothing to start, no error


def test_service_is_restarted_run_script_is_not(supervisor: Supervisor, partition: Path) -> None:
    script(partition / "etc/run/once", "#!/bin/sh\necho ran >> runs.txt\nsleep 0.2\n")
    supervisor.write_partition("slappart0", partition)
    supervisor.ensure_running()
    supervisor.start_partition("slappart0")
    first = running_pid(supervisor, "slappart0", "web-on-watch")
    os.kill(first, signal.SIGKILL)
    second = running_pid(supervisor, "slappart0", "web-on-watch", not_pid=first)
    assert psutil.Process(second).cwd() == str(partition)
    wait_for(lambda: states(supervisor, "slappart0")["once"] == "EXITED")
    # supervisord restarts what it restarts in one pass over all programs: a service restarted
    # after the run script exited proves a pass that left the run script down
    os.kill(second, signal.SIGKILL)
    running_pid(supervisor, "slappart0", "web-on-watch", not_pid=second)
    assert states(supervisor, "slappart0")["once"] == "EXITED"  # run scripts stay down
    assert (partition / "runs.txt").read_text() == "ran\n"


def test_reload_applies_changes_only(supervisor: Supervisor, partition: Path) -> None:
    supervisor.write_partition("slappart0", partition)
    supervisor.ensure_running()  # a fresh daemon reads the file itself
    assert supervisor.reload() == ReloadSummary()
    supervisor.start_partition("slappart0")
    old = psutil.Process(running_pid(supervisor, "slappart0", "web-on-watch"))

    assert not supervisor.write_partition("slappart0", partition)
    script(partition / "etc/service/api", SERVICE)
    assert supervisor.write_partition("slappart0", partition)
    assert supervisor.reload() == ReloadSummary(changed=("slappart0",))
    assert not old.is_running()  # a changed group is stopped and re-added, not started
    assert states(supervisor, "slappart0") == {
        "api-on-watch": "STOPPED",
        "once": "STOPPED",
        "web-on-watch": "STOPPED",
    }
    supervisor.start_partition("slappart0")
    running_pid(supervisor, "slappart0", "api-on-watch")
    running_pid(supervisor, "slappart0", "web-on-watch")


def test_start_all_after_a_fresh_supervisord(supervisor: Supervisor, partition: Path) -> None:
    other = partition.parent / "slappart1"
    script(other / "etc/service/db", SERVICE)
    supervisor.write_partition("slappart0", partition)
    supervisor.write_partition("slappart1", other)
    supervisor.ensure_running()
    supervisor.start_partition("slappart0")
    running_pid(supervisor, "slappart0", "web-on-watch")

    supervisor.shutdown()  # a reboot: programs are autostart=false
    supervisor.ensure_running()
    assert states(supervisor, "slappart1") == {"db-on-watch": "STOPPED"}
    supervisor.start_all()
    running_pid(supervisor, "slappart0", "web-on-watch")
    running_pid(supervisor, "slappart1", "db-on-watch")


def test_supervisorctl_passthrough(supervisor: Supervisor, partition: Path, capfd) -> None:
    supervisor.write_partition("slappart0", partition)
    supervisor.ensure_running()
    supervisor.start_partition("slappart0")
    running_pid(supervisor, "slappart0", "web-on-watch")
    assert supervisor.supervisorctl(["status", "slappart0:web-on-watch"]) == 0
    assert "slappart0:web-on-watch" in capfd.readouterr().out
    assert supervisor.supervisorctl(["stop", "slappart0:web-on-watch"]) == 0
    assert states(supervisor, "slappart0")["web-on-watch"] == "STOPPED"
    assert supervisor.supervisorctl(["status", "nosuch:thing"]) != 0


@pytest.mark.skipif(os.geteuid() != 0, reason="only root switches users")
def test_programs_run_as_the_partition_owner(supervisor: Supervisor, partition: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    partition.chmod(0o750)
    for path in (partition, *partition.rglob("*")):
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    supervisor.write_partition("slappart0", partition)
    assert "user = nobody" in supervisor.partition_conf("slappart0").read_text()
    supervisor.ensure_running()
    supervisor.start_partition("slappart0")
    service = psutil.Process(running_pid(supervisor, "slappart0", "web-on-watch"))
    assert service.uids().real == nobody.pw_uid
    log = wait_for(lambda: (partition / ".slappart0_web.log").read_text())
    assert f"started as {nobody.pw_uid} HOME={nobody.pw_dir} USER=nobody" in log


def test_crashed_daemon_and_stopped_watchdog_are_replaced(supervisor: Supervisor) -> None:
    supervisor.ensure_running()
    wait_for(lambda: states(supervisor, "watchdog") == {"watchdog": "RUNNING"})
    assert supervisor.supervisorctl(["stop", "watchdog:watchdog"]) == 0
    assert states(supervisor, "watchdog") == {"watchdog": "STOPPED"}
    supervisor.ensure_running()
    wait_for(lambda: states(supervisor, "watchdog") == {"watchdog": "RUNNING"})

    crashed = psutil.Process(int(supervisor.paths.pid_file.read_text()))
    crashed.kill()
    crashed.wait(5)
    assert supervisor.paths.socket.exists()  # stale
    assert supervisor.state() is None
    supervisor.ensure_running()
    assert int(supervisor.paths.pid_file.read_text()) != crashed.pid
    assert supervisor.is_running()


def test_launch_failure_is_one_clear_error(instance_root: Path) -> None:
    sv = Supervisor(instance_root)
    with pytest.raises(SupervisorError, match="does not exist"):
        sv.ensure_running()
    sv.ensure_config("http://127.0.0.1:9", "COMP-TEST")
    sv.paths.conf.write_text("[supervisord]\nloglevel = shouting\n")
    with pytest.raises(SupervisorError, match="failed to launch supervisord"):
        sv.ensure_running()
    with pytest.raises(SupervisorError, match="not reachable"):
        sv.reload()


def test_launch_waits_for_a_supervisord_still_shutting_down(
    supervisor: Supervisor, partition: Path
) -> None:
    """`supervisorctl shutdown` returns while supervisord still stops its programs."""
    script(
        partition / "etc/service/slow", "#!/bin/sh\ntrap 'sleep 1; exit 0' TERM\nsleep 300 & wait\n"
    )
    supervisor.write_partition("slappart0", partition)
    supervisor.ensure_running()
    supervisor.start_partition("slappart0")
    running_pid(supervisor, "slappart0", "slow-on-watch")
    first = int(supervisor.paths.pid_file.read_text())
    assert supervisor.supervisorctl(["shutdown"]) == 0
    assert psutil.pid_exists(first)  # still stopping `slow`

    supervisor.ensure_running()
    assert not psutil.pid_exists(first)
    assert int(supervisor.paths.pid_file.read_text()) != first
    assert supervisor.is_running()


def test_a_failed_launch_says_why(supervisor: Supervisor, instance_root: Path) -> None:
    supervisor.paths.conf.write_text("[supervisord]\nlogfile = /nonexistent/dir/supervisord.log\n")
    with pytest.raises(
        SupervisorError, match=r"failed to launch supervisord: Error: .*nonexistent"
    ):
        supervisor.ensure_running()


def test_parallel_deployments_reload_without_stepping_on_each_other(
    supervisor: Supervisor, instance_root: Path
) -> None:
    """Each deployment writes its group then reloads, as `slapgrid instance --jobs` does."""
    supervisor.ensure_running()
    count = 12

    def deploy(index: int) -> None:
        path = instance_root / f"slappart{index}"
        script(path / "etc/service/web", SERVICE)
        supervisor.write_partition(f"slappart{index}", path)
        supervisor.reload()
        supervisor.start_partition(f"slappart{index}")

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(deploy, range(count)))  # re-raises the first failure
    for index in range(count):
        running_pid(supervisor, f"slappart{index}", "web-on-watch")


def test_service_name_ending_in_a_newline_is_skipped(
    supervisor: Supervisor, partition: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`^…$` with `.match` let "evil\\n" through, into supervisord's configuration."""
    script(partition / "etc/service/evil\n", SERVICE)
    with caplog.at_level(logging.WARNING, logger="slapgrid"):
        supervisor.write_partition("slappart0", partition)
    assert any("evil" in r.getMessage() and "unusable" in r.getMessage() for r in caplog.records)
    assert "evil" not in supervisor.partition_conf("slappart0").read_text()
    supervisor.ensure_running()
    supervisor.reload()
    assert states(supervisor, "slappart0") == {"once": "STOPPED", "web-on-watch": "STOPPED"}
