"""Generations read from the database together: every fetch from a shared database needs
its computer's (what its `ETag` must say), and every first long poll its own.

One query answers all the reads waiting at once: a round trip and a pooled connection for a
burst of fetches, not one of each per fetch (a fleet's worker otherwise queued its fetches
behind its pool, and answered them 500). A read joins the next query, never one already
sent, which may have started before the commit the caller must see.
"""

from __future__ import annotations

import asyncio

from slapgrid.master.change_feed import RunBlocking
from slapgrid.master.errors import NotFound
from slapgrid.master.storage import MasterStore


class GenerationReads:
    """Event loop thread only."""

    def __init__(self, store: MasterStore, run_blocking: RunBlocking) -> None:
        self.store = store
        self.run_blocking = run_blocking
        self._next: dict[str, list[asyncio.Future[int]]] = {}
        self._reading: asyncio.Future[None] | None = None

    async def get(self, computer: str) -> int:
        """The database's generation of `computer` (`NotFound` if unknown)."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._next.setdefault(computer, []).append(future)
        if self._reading is None or self._reading.done():
            self._reading = asyncio.ensure_future(self._read())
        return await future

    async def _read(self) -> None:
        while self._next:
            batch, self._next = self._next, {}
            try:
                values = await self.run_blocking(self.store.generations, list(batch))
            except Exception as exc:  # each caller gets the error (a 500 of its own)
                for futures in batch.values():
                    _settle(futures, exc)
                continue
            for computer, futures in batch.items():
                value = values.get(computer)
                _settle(
                    futures, NotFound(f"unknown computer {computer!r}") if value is None else value
                )


def _settle(futures: list[asyncio.Future[int]], outcome: int | BaseException) -> None:
    for future in futures:
        if future.done():  # its caller went away
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
