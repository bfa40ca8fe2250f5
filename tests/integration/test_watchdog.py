"""The watchdog inside a real supervisord, banging a real (tiny) HTTP master."""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from slapgrid.node.layout import BANG_MEMORY
from slapgrid.node.supervisor.control import Supervisor
from support.waiting import wait_for

pytestmark = pytest.mark.integration

SAME_DEPLOYMENT = "no bang (deployed 1700000000, last bang 1700000000)"
DYING_SERVICE = "#!/bin/sh\necho up\nsleep 1.2\n"  # outlives startsecs=1, then exits (status 0)


class Master:
    """Records every POST as (path, form)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, str]]] = []
        master = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                form = {key: values[0] for key, values in parse_qs(body).items()}
                master.posts.append((self.path, form))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bangs(self) -> list[dict[str, str]]:
        return [form for path, form in self.posts if path.endswith("/softwareInstanceBang")]


@pytest.fixture
def master() -> Iterator[Master]:
    server = Master()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def instance_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="wd", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def partition(root: Path, pid: str, folder: str, timestamp: str | None) -> Path:
    path = root / pid
    script = path / "etc" / folder / "app"
    script.parent.mkdir(parents=True)
    script.write_text(DYING_SERVICE)
    script.chmod(0o755)
    if timestamp is not None:
        (path / ".timestamp").write_text(timestamp)
    return path


def starts(path: Path) -> int:
    """How many times the program of this partition was started (its log says "up")."""
    logs = list(path.glob(".*_app.log"))
    return logs[0].read_text().count("up") if logs else 0


def test_dead_service_bangs_once_per_deployment(master: Master, instance_root: Path) -> None:
    watched = partition(instance_root, "slappart0", "service", "1700000000")
    run_script = partition(instance_root, "slappart1", "run", "1700000000")
    undeployed = partition(instance_root, "slappart2", "service", None)
    (instance_root / "certs").mkdir()
    sv = Supervisor(instance_root)
    sv.ensure_config(master.url, "COMP-W", instance_root / "certs")
    try:
        for path in (watched, run_script, undeployed):
            sv.write_partition(path.name, path)
        sv.ensure_running()
        for path in (watched, run_script, undeployed):
            sv.start_partition(path.name)

        log = instance_root / "var/log/watchdog.log"
        wait_for(master.bangs, what="the first bang")
        # the service keeps dying (and being restarted); the run script died too
        wait_for(lambda: starts(watched) >= 3 and starts(undeployed) >= 2, what="restarts")
        wait_for(
            lambda: starts(run_script) == 1 and not sv.process_info("slappart1")[0].pid,
            what="the run script to exit",
        )
        # the listener handled a later death of the banged deployment, and declined
        wait_for(lambda: SAME_DEPLOYMENT in log.read_text(), what="a declined bang")
        assert master.bangs() == [
            {
                "computer_id": "COMP-W",
                "computer_partition_id": "slappart0",
                "message": "app-on-watch process in partition slappart0 encountered a problem",
            }
        ]
        assert (watched / BANG_MEMORY).read_text() == "1700000000"
        assert not (undeployed / BANG_MEMORY).exists()
        assert not (run_script / BANG_MEMORY).exists()

        (watched / ".timestamp").write_text("1700000100")  # a new deployment
        wait_for(lambda: len(master.bangs()) == 2, what="the second bang")
        # the listener remembers a bang once the master answered it, and logs it after that
        wait_for(lambda: (watched / BANG_MEMORY).read_text() == "1700000100", what="memory")
        wait_for(lambda: log.read_text().count("Banged partition slappart0") == 2, what="log")
        assert len(master.bangs()) == 2
    finally:
        sv.shutdown()
