"""`slapgrid node` end to end: the agent as a real subprocess (real signals) against the
embedded master (in its own process, so it can crash), building examples/hello with real
buildout and running it under real supervisord. Each test has its own site and agent; the
example SR is built once for the module (but for the test that interrupts its build)."""

from __future__ import annotations

import contextlib
import http.server
import json
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from daemon_site import (
    COMPUTER,
    SOFTWARE,
    Site,
    answers,
    is_deployed,
    is_deploying,
    log_time,
)
from slapgrid.master.server import MasterServer
from slapgrid.master.storage import MasterStore
from slapgrid.node.config import NodeConfig
from slapgrid.node.daemon.changes import Observed, Watcher, WatchEvent
from slapgrid.node.safety import software_hash
from slapgrid.node.software.run import run_software
from slapgrid.node.supervisor.control import Supervisor
from slapgrid.slap import marshal
from slapgrid.slap.client import SlapClient
from slapgrid.slap.documents import Computer, SoftwareRelease
from support.addresses import free_port
from support.configs import node_config
from support.waiting import wait_for

pytestmark = pytest.mark.integration

PARTITIONS = 4  # the latency test requests four


@pytest.fixture(scope="module")
def built_software(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A software root with the example SR built: the sites of this module share it."""
    root = tmp_path_factory.mktemp("daemon-software")
    with contextlib.closing(Site(root, 1)) as site:
        site.client.supply(SOFTWARE)
        config = node_config(
            root, master_url=site.url, computer_id=COMPUTER, software_min_free_space=0
        )
        assert run_software(config, site.client).status == 0
    return site.software_root


@pytest.fixture
def site(tmp_path: Path, built_software: Path) -> Iterator[Site]:
    """A site of its own, the SR supplied and built, its agent past its first instance run."""
    with contextlib.closing(
        Site(tmp_path, PARTITIONS, software_root=built_software, instance_interval=60)
    ) as site:
        site.client.supply(SOFTWARE)
        agent = site.start_agent()
        agent.event(lambda e: e.get("decision") == "finished" and e["job"] == "instance", 60)
        yield site


def deployed(site: Site, title: str) -> str:
    """Request `title` on a free port; its partition id once its service answers."""
    assert site.agent is not None
    port = free_port()
    pid = site.request(title, port=str(port))
    url = site.service_url(pid, port)
    wait_for(lambda: answers(url), 60, what=f"the service of {title}", step=0.2)
    site.agent.event(is_deployed(pid), timeout=20)
    return pid


def buildouts_in(directory: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(str(directory) in part for part in process.info["cmdline"] or ()):
                found.append(process)
    return found


def test_sigterm_mid_build_then_rerun_converges(tmp_path: Path) -> None:
    with contextlib.closing(Site(tmp_path, 1, instance_interval=60)) as site:
        site.client.supply(SOFTWARE)
        port = free_port()
        pid = site.request("first", port=str(port))
        agent = site.start_agent()
        agent.event(lambda e: e["message"].startswith("installing "), timeout=20)
        software = site.software_root / software_hash(SOFTWARE)
        wait_for(lambda: buildouts_in(software), timeout=20, what="the build's buildout")
        assert agent.stop(timeout=20) == 0
        assert not (software / ".completed").exists()
        assert buildouts_in(software) == []  # cancelled, not orphaned
        assert not (site.instance_root / pid / ".timestamp").exists()
        messages = [e["message"] for e in agent.events()]
        assert "SIGTERM received: stopping" in messages
        assert "slapgrid node stopped" in messages
        status = json.loads((site.instance_root / ".slapgrid" / "daemon.json").read_text())
        assert status["state"] == "stopped"

        agent = site.start_agent()  # the rerun builds from scratch, then deploys, unattended
        url = site.service_url(pid, port)
        wait_for(lambda: answers(url), timeout=90, what="the first service", step=0.2)
        assert (software / ".completed").exists()
        timestamp = site.instance_root / pid / ".timestamp"
        wait_for(timestamp.exists, timeout=15, what="the deployment to complete")


def test_request_reaches_a_running_service_within_two_seconds(site: Site) -> None:
    assert site.agent is not None
    agent = site.agent
    reactions, running = [], []
    for index in range(4):
        port = free_port()
        requested = time.time()
        pid = site.request(f"latency-{index}", port=str(port))
        deploying = agent.event(is_deploying(pid), timeout=10)
        url = site.service_url(pid, port)
        wait_for(lambda url=url: answers(url), timeout=20, what=f"service of {pid}", step=0.02)
        running.append(time.time() - requested)
        reactions.append(log_time(deploying) - requested)
    reactions.sort()
    running.sort()
    print(
        f"\nrequest → deployment starts: {', '.join(f'{r:.2f}' for r in reactions)} s; "
        f"request → service answers: {', '.join(f'{r:.2f}' for r in running)} s "
        f"(median {statistics.median(running):.2f} s; the reference's cron: up to 60 s)"
    )
    assert reactions[-1] <= 2.0  # the target, p95 of 4 samples = the worst
    assert running[-1] <= 10.0


def test_status_and_metrics_describe_the_agent(site: Site) -> None:
    deployed(site, "status")
    done = subprocess.run(
        [sys.executable, "-m", "slapgrid", "status", "--cfg", str(site.config_file), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    daemon = json.loads(done.stdout)["daemon"]
    assert daemon["alive"] and daemon["state"] == "running"
    assert daemon["watch"]["mode"] == "long-poll"
    assert daemon["last"]["instance"]["result"] == "ok"
    url = f"http://127.0.0.1:{site.metrics_port}/metrics"
    started = 'slapgrid_node_partitions{state="started"} 1.0'

    def metrics() -> str | None:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return text if started in text else None

    text = wait_for(metrics, 20, what="the metrics to count the started partition")
    assert 'slapgrid_node_runs_total{job="instance"' in text
    assert "process_open_fds" in text


def test_second_agent_is_refused(site: Site) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "slapgrid", "node", "--cfg", str(site.config_file), "--now"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 10
    assert "another slapgrid node run is in progress" in done.stderr


def test_sighup_reloads_the_configuration(site: Site) -> None:
    assert site.agent is not None
    site.write_config(instance_interval=45)
    site.agent.process.send_signal(signal.SIGHUP)
    reloaded = site.agent.event(lambda e: e.get("decision") == "reload", timeout=10)
    assert "instance every 45 s" in reloaded["message"]
    assert site.agent.process.poll() is None
    status_file = site.instance_root / ".slapgrid" / "daemon.json"

    def scheduled() -> float | None:  # None while an instance run is under way
        return json.loads(status_file.read_text())["next"]["instance"]

    assert wait_for(scheduled, what="the next instance run scheduled") <= time.time() + 45


def test_master_restart_mid_run_recovers(site: Site) -> None:
    assert site.agent is not None
    agent = site.agent
    deployed(site, "moving")
    mark = len(agent.events())
    port = free_port()
    pid = site.request("moving", port=str(port))  # a change: redeploy on a new port
    agent.event(is_deploying(pid), timeout=10, after=mark)
    site.restart_master(down=2)  # the deployment in progress loses its master
    agent.event(lambda e: e.get("decision") == "watch-error", timeout=10, after=mark)
    url = site.service_url(pid, port)
    wait_for(lambda: answers(url), timeout=60, what="the redeployed service", step=0.2)
    agent.event(is_deployed(pid), timeout=20, after=mark)
    assert agent.process.poll() is None
    partition = next(p for p in site.client.computer().partitions if p.partition_id == pid)
    assert (partition.access_status or "").startswith("#access")


def test_sigterm_leaves_services_running(site: Site) -> None:
    assert site.agent is not None
    deployed(site, "kept")
    supervisor = Supervisor(site.instance_root)
    before = {
        p.partition_id: [i.pid for i in supervisor.process_info(p.partition_id)]
        for p in site.client.computer().partitions
        if not p.is_free
    }
    assert site.agent.stop() == 0
    assert supervisor.is_running()
    after = {pid: [i.pid for i in supervisor.process_info(pid)] for pid in before}
    assert after == before and all(after.values())
    status = json.loads((site.instance_root / ".slapgrid" / "daemon.json").read_text())
    assert status["state"] == "stopped" and status["running"] == {}


# --- the watcher alone, against a master with and without the change feed -------------------


def watch(url: str, poll_interval: float) -> tuple[Watcher, queue.SimpleQueue[WatchEvent]]:
    config = NodeConfig(
        master_url=url, computer_id="COMP-W", instance_root=Path("/"), software_root=Path("/")
    )
    events: queue.SimpleQueue[WatchEvent] = queue.SimpleQueue()

    def connect(config: NodeConfig) -> SlapClient:
        return SlapClient(config.master_url, config.computer_id)

    # short long polls: stopping the master waits for the one in flight
    watcher = Watcher(config, connect, events.put, poll_interval=poll_interval, long_poll_seconds=1)
    watcher.start()
    return watcher, events


def test_watcher_long_polls_our_master(tmp_path: Path) -> None:
    store = MasterStore(tmp_path / "master.db", default_computer="COMP-W")
    try:
        with (
            MasterServer(store, insecure=True) as server,
            SlapClient(server.url, "COMP-W") as client,
        ):
            watcher, events = watch(server.url, poll_interval=60)
            baseline = events.get(timeout=10)
            assert isinstance(baseline, Observed) and baseline.mode == "long-poll"
            assert baseline.snapshot.software == frozenset()
            supplied = time.monotonic()
            client.supply("http://example.invalid/sr.cfg")
            change = events.get(timeout=5)
            assert time.monotonic() - supplied < 1.0  # woken by the commit, not by a timer
            assert isinstance(change, Observed) and change.generation != baseline.generation
            assert change.snapshot.software == {("http://example.invalid/sr.cfg", "available")}
            watcher.stop.set()
    finally:
        store.close()


def test_watcher_polls_a_master_without_the_change_feed() -> None:
    document = {"software": ["http://a"]}

    class ReferenceLike(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if not self.path.startswith("/getFullComputerInformation?"):
                self.send_error(404)
                return
            releases = [SoftwareRelease(url, "COMP-W", "available") for url in document["software"]]
            body = marshal.dumps(Computer("COMP-W", [], releases).to_wire())
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ReferenceLike)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        watcher, events = watch(f"http://127.0.0.1:{server.server_port}/", poll_interval=0.2)
        first = events.get(timeout=10)
        assert isinstance(first, Observed) and first.mode == "poll"
        document["software"] = ["http://a", "http://b"]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            event = events.get(timeout=5)
            assert isinstance(event, Observed) and event.mode == "poll"
            if ("http://b", "available") in event.snapshot.software:
                break
        else:
            raise AssertionError("the poll never saw the new software release")
        watcher.stop.set()
    finally:
        server.shutdown()
        server.server_close()
