"""A master that trickles or redirects cannot hold a run nor send its posts elsewhere."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from recording_server import Answer, RecordingServer
from slapgrid.slap.client import SlapClient
from slapgrid.slap.errors import ConnectionError, HTTPStatusError

pytestmark = pytest.mark.integration

TIMEOUT = 1.0
SLACK = 3.0  # generous: a busy machine may be slow to notice, never slow by a trickle


class TricklingMaster:
    """Answers every request one byte at a time, each byte well within a read timeout."""

    def __init__(self, head: bytes, body: bytes, interval: float = 0.2) -> None:
        self.head, self.body, self.interval = head, body, interval
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}/"

    def _serve(self) -> None:
        self.listener.settimeout(0.1)
        while not self.stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.recv(65536)
                connection.sendall(self.head)
                for byte in self.body:  # bounded: the test ends it sooner
                    if self.stop.wait(self.interval):
                        return
                    try:
                        connection.sendall(bytes([byte]))
                    except OSError:
                        break

    def __enter__(self) -> TricklingMaster:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.thread.join(5)
        self.listener.close()


@pytest.fixture(
    params=[
        pytest.param((b"", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"), id="headers"),
        pytest.param((b"HTTP/1.1 200 OK\r\nContent-Length: 400\r\n\r\n", b"y" * 400), id="body"),
    ]
)
def trickling(request: pytest.FixtureRequest) -> Iterator[TricklingMaster]:
    head, body = request.param
    with TricklingMaster(head, body) as master:
        yield master


def test_a_trickling_master_is_cut_off_at_the_timeout(trickling: TricklingMaster) -> None:
    started = time.monotonic()
    with (
        SlapClient(trickling.url, "COMP-1", timeout=TIMEOUT) as client,
        pytest.raises(ConnectionError, match=r"no whole answer .* within 1 s"),
    ):
        client.computer()
    assert time.monotonic() - started < TIMEOUT + SLACK


def test_a_redirect_is_refused_and_the_post_goes_nowhere_else() -> None:
    with RecordingServer() as elsewhere, RecordingServer() as master:
        moved = Answer(307, b"", headers={"Location": elsewhere.url + "softwareReleaseError"})
        master.routes["softwareReleaseError"] = moved
        with (
            SlapClient(master.url, "COMP-1") as client,
            pytest.raises(HTTPStatusError, match=r"307 .*redirect to .* refused"),
        ):
            client.software_release_error("http://sr/software.cfg", "boom")
        assert [r.path for r in master.requests] == ["/softwareReleaseError"]
        assert elsewhere.requests == []
