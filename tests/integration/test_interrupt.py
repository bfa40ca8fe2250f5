"""Ctrl-C on a real terminal during a Software Release build.

The command runs in a session of its own whose controlling terminal is a pty; writing the
terminal's interrupt character makes the line discipline send SIGINT to the foreground
process group, as a person pressing Ctrl-C does. The build (a real buildout, held by a
profile that is slow to download) lives in a session of its own, out of the terminal's
reach: only the agent can stop it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from recording_server import Answer, RecordingServer
from slapgrid.exit_status import ExitStatus
from slapgrid.master.server import MasterServer
from slapgrid.master.storage import MasterStore
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
        self.child = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
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


@pytest.fixture
def master(tmp_path: Path) -> Iterator[MasterServer]:
    store = MasterStore(tmp_path / "master.db", default_computer=COMP)
    with MasterServer(store) as server:
        yield server
    store.close()


def alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_ctrl_c_stops_the_build_within_2_s_and_marks_nothing_done(
    tmp_path: Path, master: MasterServer
) -> None:
    release = threading.Event()

    def slow(_request: object) -> Answer:  # buildout waits here for its extended profile
        release.wait(120)
        return Answer(body=TINY.encode(), content_type="text/plain")

    roots = {name: tmp_path / name for name in ("instance", "software")}
    for root in roots.values():
        root.mkdir()
    flags = [
        *("--master-url", master.url, "--computer-id", COMP),
        *("--instance-root", str(roots["instance"]), "--software-root", str(roots["software"])),
    ]
    with RecordingServer(routes={"base.cfg": slow}) as profiles:
        url = tmp_path / "slow.cfg"
        url.write_text(f"[buildout]\nextends = {profiles.url}base.cfg\n")
        with SlapClient(master.url, COMP) as client:
            client.supply(str(url))
        directory = roots["software"] / software_hash(str(url))
        terminal = Terminal([sys.executable, "-c", ON_A_TERMINAL, "software", *flags])
        try:
            wait_for(lambda: profiles.requests, 60, "the build to ask for its profile")
            build = psutil.Process(terminal.child.pid).children(recursive=True)
            assert build, "no build process under the agent"
            pressed = time.monotonic()
            os.write(terminal.master, INTERRUPT)
            status = terminal.child.wait(timeout=30)
            took = time.monotonic() - pressed
            output = terminal.text()
        finally:
            terminal.close()
            release.set()
        assert took < 2.0, f"Ctrl-C took {took:.2f} s\n{output}"
        assert status == ExitStatus.INTERRUPTED, output
        assert output.rstrip().splitlines()[-1] == "slapgrid: interrupted", output
        assert "Traceback" not in output
        assert not [p.pid for p in build if alive(p)], "build processes left running"
        assert not (directory / ".completed").exists()
        assert StateStore(roots["software"]).failures() == {}  # no back-off: not a failure
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
