"""A node driven by `slapgrid node` in a subprocess, for the daemon's integration tests and
benchmarks: the master in its own process too (so it can crash), partitions formatted, the
agent's JSON log parsed as it grows."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.request
from calendar import timegm
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slapgrid.node.format.run import run_format
from slapgrid.node.supervisor.control import Supervisor
from slapgrid.slap.client import SlapClient
from support.addresses import free_port, loopback_network
from support.waiting import wait_for

SOFTWARE = str(Path(__file__).parents[1] / "examples" / "hello" / "software.cfg")
COMPUTER = "COMP-DAEMON"


def answers(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return b"Hello" in response.read()


def log_time(entry: dict[str, Any]) -> float:
    """The JSON log's `2024-01-02T03:04:05.678Z` as a Unix time."""
    stamp, millis = entry["time"].rstrip("Z").split(".")
    return timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S")) + int(millis) / 1000


def is_deploying(pid: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("partition") == pid and e.get("action") == "deploy"


def is_deployed(pid: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("partition") == pid and e.get("action") == "deployed"


class Agent:
    """`python -m slapgrid node` in a subprocess, logging JSON lines to a file."""

    def __init__(self, site: Site, *options: str) -> None:
        self.log = site.root / f"agent-{time.monotonic_ns()}.log"
        self._events: list[dict[str, Any]] = []
        self._offset = 0
        command = [sys.executable, "-m", "slapgrid", "--log-format", "json", "--log-file"]
        command += [str(self.log), "node", "--cfg", str(site.config_file), "--now"]
        command += ["--no-progress", "--metrics-port", str(site.metrics_port), *options]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def events(self) -> list[dict[str, Any]]:
        """Every event logged so far (complete lines only; read incrementally)."""
        with contextlib.suppress(FileNotFoundError), self.log.open("rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
            complete = data[: data.rfind(b"\n") + 1]
            self._offset += len(complete)
            for line in complete.splitlines():
                if line.startswith(b"{"):
                    self._events.append(json.loads(line))
        return self._events

    def event(
        self, match: Callable[[dict[str, Any]], bool], timeout: float, after: int = 0
    ) -> dict[str, Any]:
        """The first event (of those after the first `after` ones) that matches."""
        return wait_for(
            lambda: next((e for e in self.events()[after:] if match(e)), None),
            timeout,
            what="a log event",
        )

    def stop(self, timeout: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class Site:
    """A master process, a formatted node and its slapos.cfg; at most one agent at a time."""

    def __init__(
        self, root: Path, partitions: int, software_root: Path | None = None, **options: object
    ) -> None:
        self.root = root
        self.master_port = free_port()
        self.url = f"http://127.0.0.1:{self.master_port}/"
        self.master = self.start_master()
        self.instance_root = root / "instance"
        self.software_root = software_root or root / "software"
        self.instance_root.mkdir()
        self.software_root.mkdir(exist_ok=True)
        self.metrics_port = free_port()
        formatting = {
            "master_url": self.url,
            "computer_id": COMPUTER,
            "instance_root": str(self.instance_root),
            "software_root": str(self.software_root),
            "partition_amount": partitions,
            "alter_user": False,
            "ipv4_local_network": loopback_network(),  # services of concurrent tests apart
        }
        assert run_format(None, formatting) == 0
        self.config_file = root / "slapos.cfg"
        self.write_config(**options)
        self.client = SlapClient(self.url, COMPUTER)
        self.agent: Agent | None = None

    def write_config(self, **options: object) -> None:
        lines = [
            "[slapos]",
            f"master_url = {self.url}",
            f"computer_id = {COMPUTER}",
            f"instance_root = {self.instance_root}",
            f"software_root = {self.software_root}",
            "software_min_free_space = 0",
            "instance_min_free_space = 0",
            "promise_timeout = 10",
            *(f"{key} = {value}" for key, value in options.items()),
        ]
        self.config_file.write_text("\n".join(lines) + "\n")

    def start_master(self) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "slapgrid", "master", "start", "--insecure", "--port"]
        command += [str(self.master_port), "--database", str(self.root / "master.db")]
        command += ["--computer-id", COMPUTER]
        with (self.root / "master.log").open("ab") as log:
            master = subprocess.Popen(command, stdout=log, stderr=log)
        probe = f"{self.url}getComputerStatus?computer_id={COMPUTER}"
        wait_for(lambda: urllib.request.urlopen(probe, timeout=1), timeout=20, what="the master")
        return master

    def restart_master(self, down: float) -> None:
        """A crash (SIGKILL: connections reset, nothing flushed), then a fresh start."""
        self.master.kill()
        self.master.wait()
        time.sleep(down)
        self.master = self.start_master()

    def start_agent(self, *options: str) -> Agent:
        assert self.agent is None or self.agent.process.poll() is not None
        self.agent = Agent(self, *options)
        return self.agent

    def request(self, title: str, state: str = "started", **parameters: str) -> str:
        instance = self.client.request(SOFTWARE, title, parameters=parameters, state=state)
        return instance.partition_id or ""

    def service_url(self, pid: str, port: int) -> str:
        partition = next(p for p in self.client.computer().partitions if p.partition_id == pid)
        ipv4 = next((a[-1] for a in partition.ip_list if "." in a[-1]), "127.0.0.1")
        return f"http://{ipv4}:{port}/"

    def close(self) -> None:
        """Agent, services, supervisord, master: nothing of the site survives."""
        if self.agent is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.agent.stop(timeout=20)
            self.agent.kill()
        Supervisor(self.instance_root).shutdown()
        self.client.close()
        self.master.terminate()
        try:
            self.master.wait(2)  # it waits for a long poll whose agent is gone
        except subprocess.TimeoutExpired:
            self.master.kill()
            self.master.wait()
