"""Where the master's blocking calls run: in threads, or briefly on the event loop.

Reads run in Starlette's thread pool. Writes wait for the store's lock, so at most
`WRITERS` threads hold them: a burst of users' requests queues on the event loop, and the
threads stay free for the nodes' reads.

A brief write (one short transaction: a node's report, a user's request) on a database this
process owns (SQLite) runs on the event loop itself. In a thread, each of its statements
would take the GIL back from a busy loop, a switch interval each: a request took 20 ms
instead of 3, and a master of 10,000 nodes served 46 of 50 requests a second, the rest
queueing for seconds. It never waits on the loop, though: if another process holds the
database, the write goes to a thread (`database.never_waiting`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import anyio

from slapgrid.master.change_feed import RunBlocking
from slapgrid.master.database import Busy, never_waiting
from slapgrid.master.storage import MasterStore

WRITERS = 2
"""Writes that may hold a worker thread at once. The store serialises writes, so more would
only wait for its lock in threads the nodes' reads need."""


def writes_in_thread() -> RunBlocking:
    """`run_in_threadpool` for writes: at most `WRITERS` threads of them at once (the limiter
    is made on the event loop, at the first write)."""
    limiter: list[anyio.CapacityLimiter] = []

    async def run(function: Callable[..., Any], *args: Any) -> Any:
        if not limiter:
            limiter.append(anyio.CapacityLimiter(WRITERS))
        call = functools.partial(function, *args)
        return await anyio.to_thread.run_sync(call, limiter=limiter[0])

    return run


def brief_writes(store: MasterStore, in_thread: RunBlocking) -> RunBlocking:
    """Runs a call of one brief write transaction: on the loop unless the database is busy
    or `shared`. A PostgreSQL write waits for its round trips: on the loop that wait starved
    the readers' threads (10,000 nodes on one worker: fetch p50 9.5 s)."""
    if store.shared:
        return in_thread

    async def run(function: Callable[..., Any], *args: Any) -> Any:
        try:
            with never_waiting():
                return function(*args)
        except Busy:  # raised before the call's transaction began: nothing to undo
            return await in_thread(function, *args)

    return run
