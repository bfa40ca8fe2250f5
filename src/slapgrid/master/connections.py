"""Connections that hold the master without asking anything are dropped.

uvicorn times a keep-alive connection out only after a first answer, and any byte received
restarts that timer: a connection that never sends a request, or sends its head a byte at a
time, stays open for good, and enough of them exhaust the master's file descriptors. Here
every request head must be complete within a deadline, counted from the connection's start
or the previous answer; bytes trickling in do not extend it, and a head longer than
`MAX_HEAD_BYTES` is refused (the parser, llhttp, sets no bound of its own). (The body has its
own deadline, in the app.) Each connection also learns, once, who is calling.
"""

from __future__ import annotations

import asyncio
import resource
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from slapgrid.master import access

HEAD_TIMEOUT = 10.0
"""Seconds a new connection gets to send a complete request head."""
MAX_HEAD_BYTES = 64 << 10
"""A SLAP call's head is a few hundred bytes; its parameters of any size go in the body."""


def guarded_protocol(
    head_timeout: float, idle_timeout: float, *, insecure: bool = False
) -> type[HttpToolsProtocol]:
    """uvicorn's HTTP/1.1 protocol (httptools: a C parser, what a master serving a fleet
    needs) with a deadline on each request head: `head_timeout` for the first,
    `idle_timeout` (keep-alive) for each next one.

    Each connection's caller (`access.Caller`, from its TLS client certificate, or trusted
    on an `insecure` master) is read once, at its start, into every request's state.
    """

    class GuardedProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None
        _answered: Any = None  # the request cycle the deadline was last disarmed for
        _head_bytes = 0  # received since the deadline was armed, before a complete head

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            caller = access.caller_of_peer(
                transport.get_extra_info("ssl_object") is not None,
                transport.get_extra_info("peercert"),
                insecure=insecure,
            )
            self.app_state = {**self.app_state, access.STATE_KEY: caller}
            self._arm(head_timeout)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            # bytes of a head: not those of a body the answer came before (a refused upload)
            reading_head = self.cycle is None or not self.cycle.more_body
            if not self._disarm_if_serving() and self._deadline is not None and reading_head:
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
                    self.send_400_response("Request head too large.")

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm(idle_timeout)
                self._disarm_if_serving()  # a pipelined request may already be in

        def _disarm_if_serving(self) -> bool:
            if self.cycle is not None and self.cycle is not self._answered:
                self._answered = self.cycle  # a complete head: the request is being served
                self._disarm()
                return True
            return False

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self, delay: float) -> None:
            self._disarm()
            self._head_bytes = 0
            self._deadline = self.loop.call_later(delay, self._drop)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _drop(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                self.transport.close()

    return GuardedProtocol


def raise_file_limit() -> int:
    """Open files: the soft limit raised to the hard one (every connection is one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if wanted > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            return soft
        return wanted
    return soft
