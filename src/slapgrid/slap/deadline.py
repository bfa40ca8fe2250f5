"""A deadline on a whole HTTP exchange, which httpx's per-read timeouts do not give.

A master that sends one byte just before each read timeout would hold a run, and its lock,
for as long as it likes. Here every socket read and write of the exchange under way in this
thread waits at most until the exchange's deadline, headers and TLS handshake included.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpcore
import httpx


class Deadline(threading.local):
    """When the exchange under way in this thread must be over (monotonic clock), if set."""

    at: float | None = None

    @contextlib.contextmanager
    def within(self, seconds: float) -> Iterator[None]:
        self.at = time.monotonic() + seconds
        try:
            yield
        finally:
            self.at = None

    def left(self, timeout: float | None) -> float | None:
        """`timeout`, shortened to what is left; raises a timeout once nothing is."""
        if self.at is None:
            return timeout
        left = self.at - time.monotonic()
        if left <= 0:
            raise httpcore.ReadTimeout("the exchange outlived its deadline")
        return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream, deadline: Deadline) -> None:
        self._stream = stream
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._deadline.left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._deadline.left(timeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        tls = self._stream.start_tls(ssl_context, server_hostname, self._deadline.left(timeout))
        return _Stream(tls, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _Backend(httpcore.SyncBackend):
    def __init__(self, deadline: Deadline) -> None:
        self._deadline = deadline

    def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        return _Stream(super().connect_tcp(*args, **kwargs), self._deadline)


class DeadlineTransport(httpx.HTTPTransport):
    """httpx's own transport, on a connection pool whose sockets obey `deadline`."""

    def __init__(self, ssl_context: ssl.SSLContext, deadline: Deadline) -> None:
        super().__init__(verify=ssl_context)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context, network_backend=_Backend(deadline)
        )
