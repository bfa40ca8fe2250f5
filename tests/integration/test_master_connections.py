"""Connections that ask nothing, or ask a byte at a time, never hold the master."""

from __future__ import annotations

import contextlib
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from master_site import served
from slapgrid.master.connections import MAX_HEAD_BYTES, raise_file_limit
from slapgrid.master.pki.authority import Authority
from slapgrid.master.pki.identity import Identity
from slapgrid.master.server import MasterServer
from slapgrid.master.storage import MasterStore
from support.tls import https_client
from support.waiting import wait_for

pytestmark = pytest.mark.integration

COMP = "COMP-CONN"
IDLE, SLOW = 1100, 100


@pytest.fixture
def master(tmp_path: Path) -> Iterator[MasterServer]:
    store = MasterStore(tmp_path / "master.db", default_computer=COMP)
    try:
        with MasterServer(store, head_timeout=2.0, insecure=True) as server:
            yield server
    finally:
        store.close()


def address(master: MasterServer) -> tuple[str, int]:
    url = httpx.URL(master.url)
    return url.host, url.port or 80


def closed_by_peer(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_idle_and_slow_connections_are_dropped_and_others_answered(master: MasterServer) -> None:
    raise_file_limit()  # this test holds more than a thousand sockets itself
    idle = [socket.create_connection(address(master)) for _ in range(IDLE)]
    slow = [socket.create_connection(address(master)) for _ in range(SLOW)]
    stop = threading.Event()

    def trickle() -> None:  # a request head, one byte per socket every 0.2 s
        head = f"GET /getComputerStatus?computer_id={COMP} HTTP/1.1\r\nHost: x\r\n".encode()
        for byte in head * 10:
            for sock in slow:
                with contextlib.suppress(OSError):
                    sock.send(bytes([byte]))
            if stop.wait(0.2):
                return

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    try:
        timings = []
        with httpx.Client() as client:
            for _ in range(20):
                started = time.monotonic()
                reply = client.get(master.url + "getComputerStatus", params={"computer_id": COMP})
                timings.append(time.monotonic() - started)
                assert reply.status_code == 200
        assert statistics.median(timings) < 0.1, timings

        wait_for(lambda: all(closed_by_peer(sock) for sock in idle), timeout=30, what="idle")
        wait_for(lambda: all(closed_by_peer(sock) for sock in slow), timeout=30, what="slow")
    finally:
        stop.set()
        sender.join()
        for sock in idle + slow:
            sock.close()


def test_over_tls_idle_connections_do_not_hold_the_master(tmp_path: Path) -> None:
    """Sockets that never start their handshake wait apart (asyncio drops them after 60 s);
    a node with its certificate is answered meanwhile."""
    raise_file_limit()
    store = MasterStore(tmp_path / "master.db", default_computer=COMP)
    authority = Authority.open(tmp_path / "pki")
    with MasterServer(store, authority=authority) as server:
        idle = [socket.create_connection(address(server)) for _ in range(IDLE)]
        try:
            with https_client(server.url, authority, Identity.for_computer(COMP)) as client:
                timings = []
                for _ in range(20):
                    started = time.monotonic()
                    reply = client.get("getComputerStatus", params={"computer_id": COMP})
                    timings.append(time.monotonic() - started)
                    assert reply.status_code == 200, reply.text
            assert statistics.median(timings) < 0.1, timings
        finally:
            for sock in idle:
                sock.close()
    store.close()


def test_a_keep_alive_connection_serves_several_requests(tmp_path: Path) -> None:
    with served(tmp_path, COMP) as server, httpx.Client() as client:
        for _ in range(3):  # the head deadline is re-armed after each answer, not tripped
            reply = client.get(server.url + "getComputerStatus", params={"computer_id": COMP})
            assert reply.status_code == 200


def test_stopping_answers_the_open_long_polls(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = MasterStore(tmp_path / "master.db", default_computer=COMP)
    server = MasterServer(store, insecure=True).start()
    generation = httpx.get(
        server.url + "slapgrid/changes", params={"computer_id": COMP, "since": "0"}
    ).json()["generation"]
    answers: list[httpx.Response] = []
    poll = threading.Thread(
        target=lambda: answers.append(
            httpx.get(
                server.url + "slapgrid/changes",
                params={"computer_id": COMP, "since": str(generation), "timeout": "60"},
                timeout=90,
            )
        )
    )
    poll.start()
    wait_for(lambda: server.state.feed.open_polls == 1, what="the poll to wait")
    started = time.monotonic()
    server.stop()
    poll.join(30)
    store.close()
    assert time.monotonic() - started < 5
    assert [answer.status_code for answer in answers] == [200]
    assert "Exception in ASGI application" not in caplog.text


def test_an_endless_request_head_is_refused(master: MasterServer) -> None:
    """The C parser bounds no head: the protocol does (a 400, or a reset when the refusal
    overtakes the bytes still sent), and the next caller is answered."""
    with socket.create_connection(address(master)) as sock:
        sock.sendall(f"GET /getComputerStatus?computer_id={COMP} HTTP/1.1\r\n".encode())
        header = b"X-Filler: " + b"a" * 1000 + b"\r\n"
        answer, dropped = b"", False
        try:
            for _ in range(4 * MAX_HEAD_BYTES // len(header)):
                sock.sendall(header)
            sock.settimeout(10)
            while chunk := sock.recv(65536):
                answer += chunk
        except (ConnectionResetError, BrokenPipeError):
            dropped = True
    assert dropped or answer.startswith(b"HTTP/1.1 400"), answer[:100]
    reply = httpx.get(master.url + "getComputerStatus", params={"computer_id": COMP})
    assert reply.status_code == 200
