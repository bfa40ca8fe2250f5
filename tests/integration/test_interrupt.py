"""Ctrl-C on a real terminal during a Software Release build.

The command runs in a session of its own whose controlling terminal is a pty; writing the
terminal's interrupt character makes the line discipline send SIGINT to the foreground
process group, as a person pressing Ctrl-C does. The build (a real buildout, held by a
profile that is slow to download) lives in a session of its own, out of the terminal's
reach: only the agent can stop it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from nodes import Node, embedded_master, node_flags
from recording_server import Answer, RecordingServer
from slapgrid.exit_status import ExitStatus
from slapgrid.master.server import MasterServer
from slapgrid.node import layout
from slapgrid.node.safety import software_hash
from slapgrid.node.state import StateStore
from slapgrid.slap.client import SlapClient
from support.waiting import wait_for

pytestmark = pytest.mark.integration

COMP = "COMP-CTRL-C"
TINY = "[buildout]\nparts = hello\n[hello]\nrecipe = zc.buildout:debug\n"
# the pty becomes the controlling terminal of the new session, then the real CLI runs
ON_A_TERMINAL = (
    "import fcntl, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "from slapgrid.cli.main import main; main(sys.argv[1:])"
)
INTERRUPT = b"\x03"  # the terminal's default VINTR character


class Terminal:
    """A pty whose output is read all along, so the command never blocks writing to it."""

    def __init__(self, argv: list[str]) -> None:
        self.master, slave = os.openpty()
        # A shell at a terminal leaves SIGINT to its default; a run started in the background
        # (`make test &`, some CI runners) inherits it ignored, and no Ctrl-C would arrive.
        self.child = subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        os.close(slave)
        self.output = b""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: every process holding the terminal has exited
                return
            if not chunk:
                return
            self.output += chunk

    def text(self) -> str:
        self.reader.join(5)
        return self.output.decode("utf-8", "replace").replace("\r\n", "\n")

    def close(self) -> None:
        if self.child.poll() is None:
            self.child.kill()
            self.child.wait()
        os.close(self.master)


def interrupt_within_2_s(terminal: Terminal, children: list[psutil.Process]) -> None:
    """Ctrl-C on the terminal: the command says so and exits 130 within 2 s, its
    `children` (in sessions of their own, out of the terminal's reach) killed."""
    pressed = time.monotonic()
    os.write(terminal.master, INTERRUPT)
    status = terminal.child.wait(timeout=30)
    took = time.monotonic() - pressed
    output = terminal.text()
    assert took < 2.0, f"Ctrl-C took {took:.2f} s\n{output}"
    assert status == ExitStatus.INTERRUPTED, output
    assert output.rstrip().splitlines()[-1] == "slapgrid: interrupted", output
    assert "Traceback" not in output
    assert not psutil.wait_procs(children, timeout=0)[1], "children left running"


@pytest.fixture
def master(tmp_path: Path) -> Iterator[MasterServer]:
    with embedded_master(tmp_path, COMP) as server:
        yield server


def test_ctrl_c_stops_the_build_within_2_s_and_marks_nothing_done(
    tmp_path: Path, master: MasterServer
) -> None:
    release = threading.Event()

    def slow(_request: object) -> Answer:  # buildout waits here for its extended profile
        release.wait(120)
        return Answer(body=TINY.encode(), content_type="text/plain")

    flags = node_flags(master.url, tmp_path, COMP)
    software_root = tmp_path / "software"
    with RecordingServer(routes={"base.cfg": slow}) as profiles:
        url = tmp_path / "slow.cfg"
        url.write_text(f"[buildout]\nextends = {profiles.url}base.cfg\n")
        with SlapClient(master.url, COMP) as client:
            client.supply(str(url))
        directory = software_root / software_hash(str(url))
        terminal = Terminal([sys.executable, "-c", ON_A_TERMINAL, "software", *flags])
        try:
            wait_for(lambda: profiles.requests, 60, "the build to ask for its profile")
            build = psutil.Process(terminal.child.pid).children(recursive=True)
            assert build, "no build process under the agent"
            interrupt_within_2_s(terminal, build)
        finally:
            terminal.close()
            release.set()
        assert not (directory / ".completed").exists()
        assert StateStore(software_root).failures() == {}  # no back-off: not a failure
        reported = master.store.snapshot()["software"]
        assert not any("error" in str(entry).lower() for entry in reported), reported

        # the next run builds it, at once
        rerun = subprocess.run(
            [sys.executable, "-m", "slapgrid", "software", *flags],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert rerun.returncode == ExitStatus.OK, rerun.stderr
    assert (directory / ".completed").exists()


def ctrl_c_during_a_slow_promise(node: Node, title: str, change: dict[str, str]) -> Path:
    """Deploy `title`, give it a promise that hangs, change its parameters by `change`
    (empty: it stays up to date), then press Ctrl-C while `slapgrid instance` waits on the
    promise; the partition's directory."""
    node.request(title)
    assert node.instance() == ExitStatus.OK
    paths = layout.partition(node.config.instance_root, node.partition(title))
    promise = paths.root / "etc" / "promise" / "slow-check"
    promise.write_text("#!/bin/sh\nexec sleep 60\n")
    promise.chmod(0o755)
    if change:
        node.request(title, **change)
    flags = node.flags()
    terminal = Terminal([sys.executable, "-c", ON_A_TERMINAL, "instance", *flags])
    try:
        sleeping = wait_for(
            lambda: [
                p
                for p in psutil.Process(terminal.child.pid).children(recursive=True)
                if p.name() == "sleep"
            ],
            60,
            "the slow promise to run",
        )
        interrupt_within_2_s(terminal, sleeping)
    finally:
        terminal.close()
    assert not paths.promise_result("slow-check").exists()  # no result of a cut-short run
    assert not node.status_text(paths.root.name).startswith("#error")  # nothing reported
    return paths.root


def test_ctrl_c_stops_the_promises_of_an_up_to_date_partition(node: Node) -> None:
    partition = ctrl_c_during_a_slow_promise(node, "slow-promise", {})
    (partition / "etc" / "promise" / "slow-check").unlink()
    assert node.instance() == ExitStatus.OK  # the next run converges


def test_ctrl_c_during_a_deployment_leaves_it_to_do(node: Node) -> None:
    partition = ctrl_c_during_a_slow_promise(node, "slow-deploy", {"greeting": "changed"})
    wanted = {p.partition_id: p.timestamp for p in node.client.computer().partitions}
    marker = partition / layout.TIMESTAMP  # what a deployment writes once it is done
    assert not marker.exists() or marker.read_text() != str(wanted[partition.name])
    (partition / "etc" / "promise" / "slow-check").unlink()
    assert node.instance() == ExitStatus.OK  # the next run deploys it
    assert marker.read_text() == str(wanted[partition.name])
