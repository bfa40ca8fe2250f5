"""`slapgrid master start --workers 3` on PostgreSQL, as an operator runs it: every
connection answered, polls on any worker woken by a change through any other, a killed
worker replaced, SIGTERM a clean stop; and the refusal of workers on SQLite."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from master_site import small_computer
from slapgrid.slap import changes
from slapgrid.slap.client import SlapClient
from support.addresses import free_port
from support.postgres import Cluster
from support.processes import ended, spawned
from support.waiting import wait_for

pytestmark = pytest.mark.integration

COMP = "COMP-WORKERS"
SR = "https://example.com/software/workers/software.cfg"
WORKERS = 3
SLAPGRID = "from slapgrid.cli.main import main; main()"


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    url: str
    port: int
    log: Path

    def workers(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children()

    def servers(self) -> list[psutil.Process]:
        """The processes holding its connections: its workers, or itself alone."""
        return self.workers() or [psutil.Process(self.process.pid)]

    def generation(self, since: int = changes.ANY_GENERATION, wait: float = 0) -> int:
        query = changes.poll_query(COMP, since, wait)
        answer = httpx.get(self.url + changes.CHANGES_PATH, params=query, timeout=wait + 10)
        answer.raise_for_status()
        return changes.parse_generation(answer.content)

    def document(self) -> httpx.Response:
        return httpx.get(self.url + "getFullComputerInformation", params={"computer_id": COMP})


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with Cluster() as running:
        yield running


def start(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / "master.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", SLAPGRID, "master", "start", *args],
            stdout=output,
            stderr=output,
        )
    return process, log


@pytest.fixture(scope="module")
def master(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One master for the tests that leave it serving."""
    directory = tmp_path_factory.mktemp("master")
    with running(directory, *workers_on(cluster)) as served:
        yield served


@pytest.fixture
def own_master(cluster: Cluster, tmp_path: Path) -> Iterator[Running]:
    """A master of the test's own, for tests that stop it."""
    with running(tmp_path, *workers_on(cluster)) as served:
        yield served


def workers_on(cluster: Cluster) -> tuple[str, ...]:
    return ("--workers", str(WORKERS), "--database", cluster.create_database())


@contextmanager
def running(directory: Path, *options: str) -> Iterator[Running]:
    """`master start` with these `options`, serving a computer of two partitions."""
    port = free_port()
    process, log = start(
        directory,
        *("--insecure", "--port", str(port), "--data-dir", str(directory)),
        *("--computer-id", COMP, *options),
    )
    running = Running(process, f"http://127.0.0.1:{port}/", port, log)
    workers = WORKERS if "--workers" in options else 0
    try:
        wait_for(lambda: ready(running, workers), 30, what="the master to serve")
        with SlapClient(running.url, COMP) as client:
            client.load_computer_configuration(small_computer(COMP, 2))
        yield running
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()  # its workers too: they stop with their parent
                process.wait(10)


def ready(running: Running, workers: int) -> bool:
    assert running.process.poll() is None, running.log.read_text()
    if workers and len(running.workers()) != workers:
        return False
    try:
        return running.document().status_code == 200
    except httpx.TransportError:
        return False


def test_many_concurrent_connections_all_get_answers(master: Running) -> None:
    async def fetch_all() -> list[int]:
        limits = httpx.Limits(max_connections=300, max_keepalive_connections=0)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            url = master.url + "getFullComputerInformation"
            answers = await asyncio.gather(
                *(client.get(url, params={"computer_id": COMP}) for _ in range(300))
            )
        return [answer.status_code for answer in answers]

    assert asyncio.run(fetch_all()) == [200] * 300


def server_connections(master: Running) -> int:
    """Established connections the master's processes hold on its port."""
    return sum(
        1
        for worker in master.servers()
        for connection in worker.net_connections("tcp")
        if connection.laddr.port == master.port and connection.status == psutil.CONN_ESTABLISHED
    )


def test_polls_on_every_worker_wake_at_one_request(master: Running) -> None:
    before = master.generation()
    answers: list[int] = []
    polls = [
        threading.Thread(target=lambda: answers.append(master.generation(before, wait=30)))
        for _ in range(12)
    ]
    for poll in polls:
        poll.start()
    wait_for(lambda: server_connections(master) >= len(polls), what="the polls to be held")
    assert not answers
    with SlapClient(master.url, COMP) as client:
        client.supply(SR)
    for poll in polls:
        poll.join(5)  # far under the polls' 30 s: woken, not timed out
    assert len(answers) == len(polls) and before not in answers
    assert set(answers) == {master.generation()}


def test_a_killed_worker_is_replaced_and_the_master_keeps_serving(master: Running) -> None:
    workers = {worker.pid for worker in master.workers()}
    killed = workers.pop()
    psutil.Process(killed).send_signal(signal.SIGKILL)
    assert all(master.document().status_code == 200 for _ in range(20))

    def replaced() -> bool:
        now = {worker.pid for worker in master.workers()}
        return len(now) == WORKERS and killed not in now and workers <= now

    wait_for(replaced, what="the killed worker to be replaced")
    assert f"(pid {killed}) was killed by SIGKILL: replaced in" in master.log.read_text()
    assert all(master.document().status_code == 200 for _ in range(20))


def test_sigterm_answers_open_polls_stops_every_worker_and_exits_0(own_master: Running) -> None:
    workers = own_master.workers()
    assert_stops_cleanly_on_sigterm(own_master)
    assert not any(worker.is_running() for worker in workers)


def test_a_single_master_stops_as_cleanly_on_sigterm(tmp_path: Path) -> None:
    """On its default SQLite database, in one process: status 0 as with workers (uvicorn
    raises the signal it stopped at again)."""
    with running(tmp_path) as master:
        assert_stops_cleanly_on_sigterm(master)


def assert_stops_cleanly_on_sigterm(master: Running) -> None:
    before = master.generation()
    answers: list[int] = []
    poll = threading.Thread(target=lambda: answers.append(master.generation(before, wait=30)))
    poll.start()
    wait_for(lambda: server_connections(master) >= 1, what="the poll to be held")
    master.process.send_signal(signal.SIGTERM)
    assert master.process.wait(20) == 0
    poll.join(5)
    assert answers == [before]
    assert "Traceback" not in master.log.read_text()


def test_workers_on_sqlite_are_refused_in_one_line(tmp_path: Path) -> None:
    process, log = start(
        tmp_path,
        *("--insecure", "--workers", "2", "--port", str(free_port())),
        *("--data-dir", str(tmp_path)),
    )
    assert process.wait(30) != 0
    lines = log.read_text().splitlines()
    assert len(lines) == 1 and "PostgreSQL" in lines[0], lines
    assert not (tmp_path / "slapgrid-master.db").exists()


def test_workers_stop_when_their_parent_is_killed(own_master: Running) -> None:
    master = own_master
    workers = master.workers()
    master.process.kill()
    master.process.wait(10)
    wait_for(lambda: not any(map(alive, workers)), what="the orphaned workers to stop")


def alive(process: psutil.Process) -> bool:
    """Running (a zombie, dead and not reaped by its new parent, is not)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_every_worker_serves_https_with_the_masters_certificate(
    cluster: Cluster, tmp_path: Path
) -> None:
    port = free_port()
    database = cluster.create_database()
    process, log = start(
        tmp_path,
        *("--workers", str(WORKERS), "--port", str(port), "--database", database),
        *("--data-dir", str(tmp_path)),
    )
    url = f"https://127.0.0.1:{port}/getHateoasUrl"
    ca = tmp_path / "pki" / "ca.pem"

    def answered() -> int:
        assert process.poll() is None, log.read_text()
        try:
            return httpx.get(url, verify=ssl.create_default_context(cafile=ca)).status_code
        except httpx.TransportError:
            return 0

    try:
        wait_for(ca.exists, 30, what="the master's CA")
        wait_for(answered, 30, what="the master to serve HTTPS")
        wait_for(lambda: len(psutil.Process(process.pid).children()) == WORKERS)
        # new connections, spread over the workers: each completes a verified handshake
        assert all(answered() in (200, 403) for _ in range(30))
    finally:
        process.terminate()
        assert process.wait(20) == 0


def test_a_worker_per_core_renders_in_threads(master: Running) -> None:
    if len(os.sched_getaffinity(0)) > WORKERS:
        pytest.skip("this machine has a core to spare for each worker's renders")
    assert master.document().status_code == 200
    assert not any(spawned(worker) for worker in master.workers())


def test_a_single_worker_renders_in_a_process_of_its_own(cluster: Cluster, tmp_path: Path) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: no core to spare for the renders")
    port = free_port()
    process, log = start(
        tmp_path,
        *("--insecure", "--port", str(port), "--database", cluster.create_database()),
        *("--data-dir", str(tmp_path), "--computer-id", COMP),
    )
    served = Running(process, f"http://127.0.0.1:{port}/", port, log)
    try:

        def rendered() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return served.document().status_code == 200
            except httpx.TransportError:
                return False

        wait_for(rendered, 30, what="the master to serve a document")
        (render,) = spawned(psutil.Process(process.pid))
        process.terminate()
        process.wait(20)  # stopped (uvicorn ends by the signal it was stopped with)
        wait_for(lambda: ended(render), what="the render process to end")
        assert "Traceback" not in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
