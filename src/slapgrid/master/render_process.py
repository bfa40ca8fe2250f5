"""Documents rendered in a process of their own, for a master on a shared database.

A render on PostgreSQL is seven round trips and about 4 ms of CPU, most of it Python
(marshalling the document). In a thread of the master, it held the GIL a fleet's event loop
and its writers need: a process alone is a core the master's process can use. The render
process reads from the database as any other reader does; a document comes back as its
bytes and the generation it reflects, as if rendered in a thread.

Only where the machine has a core to spare (`server.serve`: fewer workers than cores). Four
workers on two cores gained nothing measurable from four render processes (one run each:
fetch p99 80 ms with them, 67 ms without), and each costs memory and a connection.

Started with `spawn`: a fork of a serving master would inherit its threads' locks and its
pooled connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import select
import signal
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from sqlalchemy.engine import Engine

from slapgrid.errors import first_line
from slapgrid.master import answers
from slapgrid.master.database import BUSY_TIMEOUT, make_engine
from slapgrid.master.document_cache import CachedDocument
from slapgrid.master.errors import MasterError

log = logging.getLogger("slapgrid.master")

_engine: Engine | None = None  # the render process's own


class RenderFailed(Exception):
    """A render that failed in the render process, told in one line (its exception may
    not cross processes)."""


class RenderProcess:
    """`await render(computer)`: its document, rendered in the render process. Event loop
    only; a render process that died is replaced at the next render."""

    def __init__(self, url: str, busy_timeout: float = BUSY_TIMEOUT) -> None:
        self.url = url
        self.busy_timeout = busy_timeout
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Start the process now, rather than at the first fetch (it takes a second)."""
        self._running().submit(_ready)

    async def __call__(self, computer: str) -> CachedDocument:
        for attempt in range(2):
            pool = self._running()
            try:
                return await asyncio.wrap_future(pool.submit(_render, computer))
            except BrokenProcessPool:
                if self._pool is pool:
                    self._pool = None
                if attempt == 0:
                    log.warning("the render process ended; rendering %s in a new one", computer)
        raise RenderFailed(f"rendering computer {computer}: the render process ended")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _running(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_open,
                initargs=(self.url, self.busy_timeout, os.getpid()),
            )
        return self._pool


# --- in the render process ------------------------------------------------------------


def _open(url: str, busy_timeout: float, master: int) -> None:
    global _engine
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is for the master, which stops it
    threading.Thread(target=_end_with, args=(master,), daemon=True).start()
    _engine = make_engine(url, busy_timeout, immediate=False, readers=1)


def _end_with(master: int) -> None:
    """A master killed outright cannot stop its render process, which would wait for work
    forever, holding a database connection: it ends when its master does."""
    with contextlib.suppress(ProcessLookupError):
        select.select([os.pidfd_open(master)], [], [])
    os._exit(0)


def _ready() -> None:
    """Nothing: the process is up once it has run."""


def _render(computer: str) -> CachedDocument:
    assert _engine is not None
    try:
        with _engine.connect() as connection, connection.begin():
            return CachedDocument.of(*answers.computer_document(connection, computer))
    except MasterError:
        raise  # NotFound: the master's own error, which crosses processes
    except Exception as exc:
        raise RenderFailed(f"rendering computer {computer}: {first_line(exc)}") from None
