"""`slapgrid bang`, `promise`, `start|stop|restart|status|tail`: the real command line in a
child process, against a live embedded master over HTTP and the node's real supervisord."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest

from nodes import COMPUTER, Node, get
from reference_env import free_port
from slapgrid.exit_status import ExitStatus
from support.commands import one_line_error, slapgrid
from support.waiting import wait_for

pytestmark = pytest.mark.integration

SERVICE = "hello-http-on-watch"


@pytest.fixture
def deployed(node: Node) -> Iterator[tuple[Node, str]]:
    """The hello instance deployed and running on a fresh node."""
    node.request()
    assert node.instance() == ExitStatus.OK
    pid = node.partition()
    assert node.processes(pid) == [f"{SERVICE}:RUNNING"]
    yield node, pid


# --- bang -------------------------------------------------------------------------------------


def test_bang_tells_the_master_which_reprocesses_every_partition(
    deployed: tuple[Node, str],
) -> None:
    node, _ = deployed
    before = node.store.generation(COMPUTER)
    done = slapgrid("bang", *node.flags(), "-m", "disk replaced")
    assert done.returncode == ExitStatus.OK, done.stderr
    assert f"banged {COMPUTER}" in done.stdout
    assert node.store.computer_bangs(COMPUTER) == ["disk replaced"]
    assert node.store.generation(COMPUTER) > before  # the node will look again


def test_bang_of_an_unknown_computer_or_without_master_is_one_line(node: Node) -> None:
    flags = node.flags()
    flags[flags.index(COMPUTER)] = "COMP-NOBODY"
    unknown = slapgrid("bang", *flags, "-m", "x")
    assert unknown.returncode != ExitStatus.OK
    assert "COMP-NOBODY" in one_line_error(unknown) or "404" in one_line_error(unknown)
    flags = node.flags()
    flags[flags.index(node.config.master_url)] = f"http://127.0.0.1:{free_port()}/"
    offline = slapgrid("bang", *flags)
    assert offline.returncode == ExitStatus.OFFLINE
    assert "cannot connect" in one_line_error(offline)


# --- promise ----------------------------------------------------------------------------------


def test_promise_runs_the_promises_and_reports_to_the_master(deployed: tuple[Node, str]) -> None:
    node, pid = deployed
    done = slapgrid("promise", *node.flags())
    assert done.returncode == ExitStatus.OK, done.stderr
    assert f"{pid}: 1 promise(s) kept" in done.stdout
    assert "slappart" in done.stdout and "skipped" not in done.stdout.replace(pid, "")

    assert node.supervisor.supervisorctl(["stop", f"{pid}:*"]) == 0
    failed = slapgrid("promise", *node.flags(), pid)
    assert failed.returncode == ExitStatus.PROMISE_FAILED, failed.stderr
    assert f"{pid}: promise check-hello-http failed:" in failed.stdout
    assert node.status_text(pid).startswith("#error")
    assert node.processes(pid) == [f"{SERVICE}:STOPPED"]  # nothing deployed or started

    assert node.supervisor.supervisorctl(["start", f"{pid}:*"]) == 0
    again = slapgrid("promise", *node.flags(), "--only-cp", pid)
    assert again.returncode == ExitStatus.OK, again.stdout + again.stderr
    assert not node.status_text(pid).startswith("#error")  # started again


def test_promise_of_an_unknown_partition_is_one_line(deployed: tuple[Node, str]) -> None:
    node, _ = deployed
    done = slapgrid("promise", *node.flags(), "slappart9")
    assert done.returncode == ExitStatus.USAGE
    assert "no partition slappart9" in one_line_error(done)
    flags = node.flags()
    flags[flags.index(node.config.master_url)] = f"http://127.0.0.1:{free_port()}/"
    offline = slapgrid("promise", *flags)
    assert offline.returncode == ExitStatus.OFFLINE
    assert "cannot connect" in one_line_error(offline)


def test_promise_skips_a_stopped_partition_and_says_so(deployed: tuple[Node, str]) -> None:
    node, pid = deployed
    node.request(state="stopped")
    assert node.instance() == ExitStatus.OK
    done = slapgrid("promise", *node.flags(), pid)
    assert done.returncode == ExitStatus.OK, done.stderr
    assert done.stdout == f"{pid}: skipped, requested stopped: no promise to keep\n"


# --- start, stop, restart, status, tail ------------------------------------------------------


def test_stop_start_restart_a_partition_by_its_name(deployed: tuple[Node, str]) -> None:
    node, pid = deployed
    stop = slapgrid("stop", *node.flags(), pid)
    assert stop.returncode == ExitStatus.OK, stop.stderr
    assert node.processes(pid) == [f"{SERVICE}:STOPPED"]

    start = slapgrid("start", *node.flags(), f"{pid}:*")
    assert start.returncode == ExitStatus.OK, start.stderr
    assert node.processes(pid) == [f"{SERVICE}:RUNNING"]
    first = node.supervisor.process_info(pid)[0].pid

    restart = slapgrid("restart", *node.flags(), f"{pid}:{SERVICE}")
    assert restart.returncode == ExitStatus.OK, restart.stderr
    assert node.processes(pid) == [f"{SERVICE}:RUNNING"]
    assert node.supervisor.process_info(pid)[0].pid != first
    wait_for(lambda: get(node.url()), what="the restarted service to answer")


def test_status_of_a_partition_is_supervisorctl_status(deployed: tuple[Node, str]) -> None:
    node, pid = deployed
    done = slapgrid("status", *node.flags(), pid)
    assert done.returncode == ExitStatus.OK, done.stderr
    assert f"{pid}:{SERVICE}" in done.stdout and "RUNNING" in done.stdout
    view = slapgrid("status", *node.flags())  # no partition: the node's own view
    assert view.returncode == ExitStatus.OK, view.stderr
    assert f"{pid}:{SERVICE}" not in view.stdout and pid in view.stdout
    json_too = slapgrid("status", *node.flags(), "--json", pid)
    assert json_too.returncode == ExitStatus.USAGE
    assert "--json" in json_too.stderr and "Traceback" not in json_too.stderr


def test_tail_shows_and_follows_a_process_log(deployed: tuple[Node, str]) -> None:
    node, pid = deployed
    url = node.url()
    get(url)  # the service logs each request
    done = slapgrid("tail", *node.flags(), "--no-follow", pid)
    assert done.returncode == ExitStatus.OK, done.stderr
    assert "GET / " in done.stdout
    follow = subprocess.Popen(
        [sys.executable, "-m", "slapgrid", "tail", *node.flags(), f"{pid}:{SERVICE}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # out of reach of the test's own signals
    )
    try:
        assert follow.stdout is not None
        os.set_blocking(follow.stdout.fileno(), False)
        seen = bytearray()

        def printed(text: bytes, times: int = 1) -> bool:
            seen.extend(follow.stdout.read() or b"")  # type: ignore[union-attr]
            return seen.count(text) >= times

        wait_for(lambda: printed(b"GET / "), what="tail -f to show the log")
        requests = seen.count(b"GET / ")
        get(url)
        wait_for(lambda: printed(b"GET / ", requests + 1), what="tail -f to show a new line")
        supervisorctl = psutil.Process(follow.pid).children()
        assert supervisorctl
        follow.terminate()  # SIGTERM to slapgrid alone, as `timeout` sends it
        assert follow.wait(timeout=30) == 128 + signal.SIGTERM
        psutil.wait_procs(supervisorctl, timeout=15)
        assert not any(child.is_running() for child in supervisorctl)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(follow.pid, signal.SIGKILL)
        follow.wait(timeout=30)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["start", "slappart9"], "no partition 'slappart9'"),
        (["stop", "slappart0:nosuch"], "has no process 'nosuch'"),
        (["status", "slappart9"], "no partition 'slappart9'"),
        (["tail", "all"], "tail follows one process"),
    ],
)
def test_unknown_partition_or_process_is_one_line(
    deployed: tuple[Node, str], argv: list[str], message: str
) -> None:
    node, pid = deployed
    argv = [a.replace("slappart0", pid) for a in argv]
    done = slapgrid(argv[0], *node.flags(), *argv[1:])
    assert done.returncode == ExitStatus.USAGE, done.stdout + done.stderr
    assert message.replace("slappart0", pid) in one_line_error(done)
    assert node.processes(pid) == [f"{SERVICE}:RUNNING"]  # nothing touched


def test_shortcuts_without_supervisord_say_so(node: Node) -> None:
    """A fresh node has no program yet: supervisord is not launched for nothing."""
    done = slapgrid("stop", *node.flags())
    assert done.returncode == ExitStatus.FAILED
    assert "supervisord is not running" in one_line_error(done)
    status = slapgrid("status", *node.flags(), "all")
    assert status.returncode == ExitStatus.OK
