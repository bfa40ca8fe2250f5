"""`slapgrid instance` and `report` end to end: the embedded master over HTTP, real buildout
building and deploying examples/hello, real supervisord running its service."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import time

import psutil
import pytest

from nodes import COMPUTER, Node, get
from slapgrid.errors import LockedError
from slapgrid.node import layout, lock
from slapgrid.node.instance.run import run_instance
from slapgrid.node.report.run import run_report
from slapgrid.node.state import StateStore
from slapgrid.slap.client import SlapClient
from support.configs import NO_MASTER
from support.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def hello(node: Node) -> str:
    """The hello instance deployed and serving: the starting point of most tests here."""
    node.request()
    assert node.instance() == 0
    pid = node.partition()
    assert node.processes(pid) == ["hello-http-on-watch:RUNNING"]
    return pid


def test_started_instance_serves_and_publishes(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    node.request()
    with caplog.at_level(logging.INFO, logger="slapgrid"):
        assert node.instance() == 0
    # a service still coming up within the start grace is not an error
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert any(r.getMessage().startswith("Promise check-hello-http kept") for r in caplog.records)
    pid = node.partition()
    # buildout's lines say whose they are, in the text and as a field
    output = [r.getMessage() for r in caplog.records if r.name == "slapgrid.node.buildout"]
    assert output and all(line.startswith(f"[{pid}] ") for line in output)
    assert f"[{pid}] Installing hello-http." in output
    url = node.url()
    assert "Hello from hello" in get(url)
    assert node.processes(pid) == ["hello-http-on-watch:RUNNING"]
    results = list((node.config.instance_root / pid / ".slapgrid/promise/result").iterdir())
    assert [json.loads(r.read_text())["result"]["failed"] for r in results] == [False]
    assert node.status_text(pid).startswith("#access")
    assert (node.config.instance_root / pid / ".timestamp").exists()


def test_unchanged_partition_is_skipped_quickly(node: Node, hello: str) -> None:
    log = node.config.instance_root / hello / ".slapgrid/log/instance.log"
    size = log.stat().st_size
    started = time.monotonic()
    assert node.instance() == 0
    assert time.monotonic() - started < 3
    assert log.stat().st_size == size  # no buildout ran
    run = StateStore(node.config.instance_root).runs()["instance"]
    assert (run["done"], run["up_to_date"]) == ([], [hello])


def test_stop_then_start_again(node: Node, hello: str) -> None:
    pid = hello
    service_pid = node.supervisor.process_info(pid)[0].pid
    node.request(state="stopped")
    assert node.instance() == 0
    assert node.processes(pid) == []
    assert not psutil.pid_exists(service_pid) or psutil.Process(service_pid).status() == "zombie"
    assert "stopped" in node.status_text(pid)
    node.request(state="started")
    assert node.instance() == 0
    assert node.processes(pid) == ["hello-http-on-watch:RUNNING"]


def test_parameter_change_redeploys(node: Node, hello: str) -> None:
    pid = hello
    node.request(port="18931")
    assert node.instance() == 0
    assert node.url().endswith(":18931/")
    assert "Hello" in get(node.url())
    assert node.processes(pid) == ["hello-http-on-watch:RUNNING"]


def test_failing_buildout_is_reported_with_its_log_and_backs_off(
    node: Node, hello: str, caplog: pytest.LogCaptureFixture
) -> None:
    pid = hello
    node.request(port="not-a-port")
    with caplog.at_level(logging.INFO, logger="slapgrid"):
        assert node.instance() == 1
    log = node.config.instance_root / pid / ".slapgrid/log/instance.log"
    [error] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert error.startswith(f"{pid} failed: ") and error.endswith(f"(see {log})")
    assert "must be a TCP port" in error
    status = node.status_text(pid)
    assert status.startswith("#error")
    error_log = (node.config.instance_root / pid / f".slapgrid-{pid}-error.log").read_text()
    assert "must be a TCP port" in error_log
    assert not (node.config.instance_root / pid / ".timestamp").exists()
    size = log.stat().st_size
    assert node.instance() == 0  # within back-off: not retried, not failed again
    assert log.stat().st_size == size
    node.request(port="18931")  # a fix from the master is picked up at once
    assert node.instance() == 0
    assert "Hello" in get(node.url())


def test_failing_promise_exits_2_and_is_reported(node: Node, hello: str) -> None:
    pid = hello
    promise = node.config.instance_root / pid / "etc/promise/always-fails"
    promise.write_text("#!/bin/sh\necho 'disk on fire'\nexit 1\n")
    promise.chmod(0o755)
    try:
        assert node.instance(force=True) == 2
        assert "disk on fire" in node.status_text(pid)
        assert not (node.config.instance_root / pid / ".timestamp").exists()
    finally:
        promise.unlink()
    assert node.instance(force=True) == 0


def test_killed_service_bangs_the_master(node: Node, hello: str) -> None:
    pid = hello
    before = node.client.computer()
    timestamp = next(p.timestamp for p in before.partitions if p.partition_id == pid)
    service_pid = node.supervisor.process_info(pid)[0].pid
    os.kill(service_pid, signal.SIGKILL)

    def bumped() -> bool:
        after = node.client.computer()
        return next(p.timestamp for p in after.partitions if p.partition_id == pid) != timestamp

    wait_for(bumped, what="the watchdog's bang to reach the master", step=0.2)
    assert node.instance() == 0  # the bang makes the partition redeploy
    assert node.processes(pid) == ["hello-http-on-watch:RUNNING"]


def test_second_concurrent_run_is_refused(node: Node) -> None:
    held = lock.hold(layout.partitions_lock(node.config.instance_root), "instance/report")
    with held, pytest.raises(LockedError, match="another slapgrid instance/report run"):
        node.instance()


def test_master_down_keeps_services_running_and_exits_3(node: Node, hello: str) -> None:
    pid = hello
    url = node.url()
    offline = dataclasses.replace(node.config, master_url=NO_MASTER)
    with SlapClient(offline.master_url, COMPUTER) as client:
        assert run_instance(offline, client).status == 3
    assert node.processes(pid) == ["hello-http-on-watch:RUNNING"]
    assert "Hello" in get(url)


def test_destroy_then_report_frees_the_partition(node: Node, hello: str) -> None:
    pid = hello
    node.request(state="destroyed")
    assert node.instance() == 0
    assert node.processes(pid) == []
    assert run_report(node.config, node.client).status == 0
    root = node.config.instance_root / pid
    assert list(root.iterdir()) == [root / layout.RESOURCE_FILE]  # still a partition
    assert (root.stat().st_mode & 0o777) == 0o750
    partition = next(p for p in node.client.computer().partitions if p.partition_id == pid)
    assert partition.is_free
