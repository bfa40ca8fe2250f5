"""Health that tells the truth, end to end: the embedded master over HTTP, real buildout
deploying examples/hello, real supervisord, real promises.

A service that runs but fails its promise is a promise failure of every check (exit 2, the
master told, `slapgrid status` showing it) and is healed by a redeployment after
`promise_failures_before_redeploy` checks in a row; a cached success never hides a service
that died right after a (re)start.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from nodes import COMPUTER, SOFTWARE, Node, get
from slapgrid.node.state import StateStore
from support.waiting import wait_for

pytestmark = pytest.mark.integration

PAGE_PROMISE = """\
import urllib.request
from slapgrid.node.promises.plugin_runner import Promise


class RunPromise(Promise):
    periodicity = 0.0001  # minutes: every check runs it

    def sense(self):
        page = urllib.request.urlopen({url!r}, timeout=5).read().decode()
        if "Hello from" in page:
            self.logger.info("page ok")
        else:
            self.logger.error("page says %s", page.strip())
"""


PORT = "28611"  # not the example's default: other nodes on this machine may serve that one
ALIVE_PROMISE = """\
import urllib.request
from slapgrid.node.promises.plugin_runner import Promise


class RunPromise(Promise):
    periodicity = 60  # minutes: between two runs, its last result stands

    def sense(self):
        urllib.request.urlopen({url!r}, timeout=2).read()
        self.logger.info("answers")
"""


def url(node: Node) -> str:
    """The instance's URL, asked with its parameters (asking without would change them)."""
    return node.client.request(SOFTWARE, "hello", parameters={"port": PORT}).connection["url"]


def status_json(node: Node) -> dict:
    config = node.config
    argv = [sys.executable, "-m", "slapgrid", "status", "--json"]
    argv += [
        "--instance-root",
        str(config.instance_root),
        "--software-root",
        str(config.software_root),
    ]
    argv += ["--master-url", config.master_url, "--computer-id", COMPUTER]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def partition_status(node: Node, pid: str) -> dict:
    return next(p for p in status_json(node)["partitions"] if p["partition_id"] == pid)


def failed_checks(node: Node, pid: str) -> int:
    checks = StateStore(node.config.instance_root).failed_checks().get(pid)
    return checks.count if checks else 0


@pytest.fixture
def deployed(node: Node) -> str:
    node.request(port=PORT)
    assert node.instance() == 0
    pid = node.partition()
    plugin = node.config.instance_root / pid / "etc/plugin/check_page.py"
    plugin.parent.mkdir(exist_ok=True)
    plugin.write_text(PAGE_PROMISE.format(url=url(node)))
    assert node.instance() == 0
    return pid


@pytest.fixture(autouse=True)
def serving(node: Node, deployed: str) -> None:
    """Each test starts with the service answering (a busy machine may still be starting it)."""
    running = ["hello-http-on-watch:RUNNING"]
    wait_for(lambda: node.processes(deployed) == running, what="the service to run")
    wait_for(lambda: "Hello from" in get(url(node)), what="the service to answer")


def page(node: Node, pid: str) -> Path:
    return node.config.instance_root / pid / "srv/www/index.html"


def test_failing_promise_of_a_running_service_is_reported_then_healed(
    node: Node, deployed: str, caplog: pytest.LogCaptureFixture
) -> None:
    pid = deployed
    node.config = replace(node.config, promise_failures_before_redeploy=3)
    log_file = node.config.instance_root / pid / ".slapgrid/log/instance.log"
    page(node, pid).write_text("<h1>Broken</h1>\n")  # the service runs, its page is wrong
    for count in (1, 2, 3):
        with caplog.at_level(logging.INFO, logger="slapgrid"):
            assert node.instance() == 2
        assert node.processes(pid) == ["hello-http-on-watch:RUNNING"]
        assert failed_checks(node, pid) == count
        assert "instance run: 0 done, 1 up to date" in caplog.text
        assert "1 promise failures" in caplog.text
        caplog.clear()
    status = node.status_text(pid)
    assert status.startswith("#error") and "page says <h1>Broken</h1>" in status
    run = StateStore(node.config.instance_root).runs()["instance"]
    assert [item[0] for item in run["promise_failed"]] == [pid]
    assert run["exit_code"] == 2
    shown = partition_status(node, pid)
    assert "check_page FAILED" in " ".join(shown["promises"])
    assert shown["failed_checks"] == 3 and "page says" in shown["last_error"]

    # the fourth pass heals it: buildout runs again and rewrites the page
    size = log_file.stat().st_size
    with caplog.at_level(logging.INFO, logger="slapgrid"):
        assert node.instance() == 0
    assert "promise check_page failed 3 checks in a row: redeploying" in caplog.text
    assert log_file.stat().st_size > size  # buildout ran
    assert "Hello from" in page(node, pid).read_text() and "Hello from" in get(url(node))
    assert failed_checks(node, pid) == 0
    assert node.status_text(pid).startswith("#access")
    assert partition_status(node, pid)["failed_checks"] == 0


def test_a_passing_check_resets_the_count(node: Node, deployed: str) -> None:
    pid = deployed
    original = page(node, pid).read_text()
    page(node, pid).write_text("<h1>Broken</h1>\n")
    assert node.instance() == 2
    assert node.instance() == 2
    assert failed_checks(node, pid) == 2
    page(node, pid).write_text(original)
    assert node.instance() == 0
    assert failed_checks(node, pid) == 0
    assert node.status_text(pid).startswith("#access")  # recovered: reported started again
    page(node, pid).write_text("<h1>Broken</h1>\n")
    assert node.instance() == 2
    assert failed_checks(node, pid) == 1  # counted from zero again: no redeployment yet
    page(node, pid).write_text(original)
    assert node.instance() == 0


def test_zero_never_redeploys(node: Node, deployed: str, caplog: pytest.LogCaptureFixture) -> None:
    pid = deployed
    node.config = replace(node.config, promise_failures_before_redeploy=0)
    original = page(node, pid).read_text()
    page(node, pid).write_text("<h1>Broken</h1>\n")
    try:
        with caplog.at_level(logging.INFO, logger="slapgrid"):
            for _ in range(4):
                assert node.instance() == 2
        assert failed_checks(node, pid) == 4
        assert "redeploying" not in caplog.text
    finally:
        page(node, pid).write_text(original)
        node.config = replace(node.config, promise_failures_before_redeploy=3)
    assert node.instance() == 0


@pytest.fixture
def alive_promise(node: Node, deployed: str) -> Iterator[None]:
    """A promise whose success stands for an hour, run once: its result is now cached."""
    alive = node.config.instance_root / deployed / "etc/plugin/check_alive.py"
    alive.write_text(ALIVE_PROMISE.format(url=url(node)))
    try:
        assert node.instance() == 0
        yield
    finally:
        alive.unlink()


def test_a_cached_result_says_so_and_its_age(
    node: Node, deployed: str, alive_promise: None, caplog: pytest.LogCaptureFixture
) -> None:
    pid = deployed
    with caplog.at_level(logging.INFO, logger="slapgrid"):
        assert node.instance() == 0
    assert re.search(r"Promise check_alive kept \(cached, \d+ s old\): answers", caplog.text)
    run = StateStore(node.config.instance_root).runs()["instance"]
    checked = {item["title"]: item for item in run["promises"][pid]}
    assert checked["check_alive"]["cached"] is True and checked["check_alive"]["age"] >= 0
    assert checked["check_page"]["cached"] is False
    shown = partition_status(node, pid)["promises"]
    assert any(re.fullmatch(r"check_alive ok \(cached, \d+ s old\)", line) for line in shown)
    assert any(re.fullmatch(r"check_page ok \(\d+ s old\)", line) for line in shown)


def test_a_cached_success_never_hides_a_service_dead_since_a_restart(
    node: Node, deployed: str, alive_promise: None, caplog: pytest.LogCaptureFixture
) -> None:
    pid = deployed
    # restarted, then hung at once: supervisord says RUNNING, the cache says it answered
    program = f"{pid}:hello-http-on-watch"
    node.supervisor.rpc.call("stopProcess", program)
    node.supervisor.rpc.call("startProcess", program)
    service = node.supervisor.process_info(pid)[0].pid
    os.kill(service, signal.SIGSTOP)
    try:
        with caplog.at_level(logging.INFO, logger="slapgrid"):
            assert node.instance() == 2
        assert "Promise check_alive failed" in caplog.text
        assert "check_alive kept" not in caplog.text
        assert "Promise 'check_alive.py' failed" in node.status_text(pid)
    finally:
        os.kill(service, signal.SIGCONT)
    assert node.instance() == 0  # it answers again: the check really ran
