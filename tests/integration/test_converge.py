"""Converge to running, always: after a reboot (supervisord and every service killed) or a
person's `supervisorctl stop`, the next pass of `slapgrid instance`, `slapgrid node` or
`slapgrid boot` starts every partition requested started, and leaves stopped ones stopped.
Real master over HTTP, real buildout, real supervisord."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nodes import COMPUTER, Node, get
from slapgrid.node.state import StateStore
from support.reboot import power_cut
from support.waiting import wait_for

pytestmark = pytest.mark.integration

SERVICE = "hello-http-on-watch:RUNNING"


def reboot(node: Node) -> None:
    assert power_cut(node.supervisor) >= 3  # supervisord, its watchdog, the services


def answers(node: Node, title: str) -> bool:
    return "Hello" in get(node.url(title))


def config_file(node: Node) -> Path:
    """The node's slapos.cfg, for the commands run as a user would run them."""
    path = node.root / "slapos.cfg"
    config = node.config
    path.write_text(
        "[slapos]\n"
        f"master_url = {config.master_url}\n"
        f"computer_id = {COMPUTER}\n"
        f"instance_root = {config.instance_root}\n"
        f"software_root = {config.software_root}\n"
        "software_min_free_space = 0\n"
        "instance_min_free_space = 0\n"
        "promise_timeout = 10\n\n"
        "[slapformat]\n"
        "partition_amount = 3\n"
        "alter_user = false\n"
    )
    return path


def slapgrid(*args: str) -> list[str]:
    return [sys.executable, "-m", "slapgrid", *args]


@pytest.fixture
def deployed(node: Node) -> Node:
    """Two partitions requested started and one stopped, all deployed."""
    node.request("first")
    node.request("second")
    node.request("idle", state="stopped")
    assert node.instance() == 0
    assert answers(node, "first") and answers(node, "second")
    return node


def test_reboot_then_one_instance_run_brings_every_started_partition_back(
    deployed: Node, caplog: pytest.LogCaptureFixture
) -> None:
    node = deployed
    first, second, idle = (node.partition(t) for t in ("first", "second", "idle"))
    reboot(node)
    with caplog.at_level(logging.INFO, logger="slapgrid"):
        assert node.instance() == 0
    assert answers(node, "first") and answers(node, "second")
    assert node.processes(first) == node.processes(second) == [SERVICE]
    assert node.processes(idle) == []  # requested stopped: stays stopped
    messages = [r.getMessage() for r in caplog.records]
    reason = "services not running: hello-http-on-watch (STOPPED Not started)"
    assert f"starting {first} (started): {reason}" in messages
    summary = "instance run: 2 done, 0 up to date, 1 skipped, 0 failed, 0 promise failures"
    assert any(m.startswith(summary) for m in messages)
    run = StateStore(node.config.instance_root).runs()["instance"]
    assert sorted(run["done"]) == sorted([first, second])
    assert run["exit_code"] == 0
    assert node.status_text(first).startswith("#access")
    assert "stopped" in node.status_text(idle)


def test_service_stopped_by_hand_comes_back_on_the_next_pass(
    deployed: Node, caplog: pytest.LogCaptureFixture
) -> None:
    node = deployed
    first = node.partition("first")
    assert node.supervisor.supervisorctl(["stop", f"{first}:*"]) == 0
    assert node.processes(first) == ["hello-http-on-watch:STOPPED"]
    with caplog.at_level(logging.INFO, logger="slapgrid"):
        assert node.instance() == 0
    assert node.processes(first) == [SERVICE]
    assert answers(node, "first")
    reason = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("starting"))
    down = "services not running: hello-http-on-watch (STOPPED"
    assert reason.startswith(f"starting {first} (started): {down}")
    assert node.instance() == 0  # all running: nothing to start, the pass is a check
    assert StateStore(node.config.instance_root).runs()["instance"]["done"] == []


def test_group_supervisord_lost_is_added_back_and_started(deployed: Node) -> None:
    node = deployed
    second = node.partition("second")
    assert node.supervisor.supervisorctl(["stop", f"{second}:*"]) == 0
    assert node.supervisor.supervisorctl(["remove", second]) == 0
    assert node.processes(second) == []
    assert node.instance() == 0
    assert node.processes(second) == [SERVICE]
    assert answers(node, "second")


def test_service_started_again_but_failing_its_promise_exits_2_and_is_reported(
    deployed: Node,
) -> None:
    node = deployed
    first = node.partition("first")
    promise = node.config.instance_root / first / "etc/promise/always-fails"
    promise.write_text("#!/bin/sh\necho 'disk on fire'\nexit 1\n")
    promise.chmod(0o755)
    try:
        assert node.supervisor.supervisorctl(["stop", f"{first}:*"]) == 0
        assert node.instance() == 2
        assert node.processes(first) == [SERVICE]  # started all the same
        assert node.status_text(first).startswith("#error")
        assert "disk on fire" in node.status_text(first)
        run = StateStore(node.config.instance_root).runs()["instance"]
        assert [pid for pid, _ in run["promise_failed"]] == [first]
        assert run["exit_code"] == 2
    finally:
        promise.unlink()
    assert node.instance(force=True) == 0


def test_reboot_then_the_agent_brings_every_started_partition_back(deployed: Node) -> None:
    node = deployed
    idle = node.partition("idle")
    reboot(node)
    log = node.root / "agent.log"
    agent = subprocess.Popen(
        slapgrid("--log-file", str(log), "node", "--cfg", str(config_file(node)), "--now"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: answers(node, "first") and answers(node, "second"), 60, "services")
        assert "services not running" in log.read_text()
        assert node.processes(idle) == []
    finally:
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(60) == 0
    assert answers(node, "first")  # stopping the agent leaves the services running


def test_boot_formats_tells_the_master_and_brings_every_started_partition_back(
    deployed: Node,
) -> None:
    node = deployed
    idle = node.partition("idle")
    reboot(node)
    done = subprocess.run(
        slapgrid("boot", "--cfg", str(config_file(node))),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert answers(node, "first") and answers(node, "second")  # at once: boot waited
    assert node.processes(idle) == []
    assert "Reboot" in node.store.computer_bangs(COMPUTER)
    assert f"boot: told the master that {COMPUTER} rebooted" in done.stderr
