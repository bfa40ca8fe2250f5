"""The change feed: each computer's generation, and long polls woken as soon as it moves."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from slapgrid.master.storage import MasterStore

if TYPE_CHECKING:
    from slapgrid.master.generation_reads import GenerationReads

# runs a blocking call off the event loop: `await run_blocking(function, *args)`
RunBlocking = Callable[..., Awaitable[Any]]


class ChangeFeed:
    """Generations read from the store's memory when it knows them (kept by commits, or on a
    shared database by notifications), and per-computer wake-ups.

    Used from the event loop's thread only: commits in other threads hand over to it.
    """

    def __init__(self, store: MasterStore, reads: GenerationReads) -> None:
        self.store = store
        self.reads = reads
        self._waiting: dict[str, set[asyncio.Future[None]]] = {}
        self._stopping = False
        self.open_polls = 0
        """Long polls waiting for a change right now."""

    async def generation(self, computer: str) -> int:
        """The computer's generation (`NotFound` if unknown), without a query when known."""
        known = self.store.known_generation(computer)
        if known is not None:
            return known
        return await self.reads.get(computer)

    async def wait(self, computer: str, since: int, timeout: float) -> int:
        """The generation, as soon as it differs from `since` or after `timeout` seconds.

        A waiting poll is one future and one timer: a fleet's master holds thousands of
        them, and every object they hold is scanned by each full garbage collection."""
        await self.generation(computer)  # NotFound for an unknown one: nothing kept for it
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()
        waiting = self._waiting.setdefault(computer, set())
        waiting.add(woken)  # before reading again, so no change slips between
        try:
            generation = await self.generation(computer)
            if generation != since or self._stopping:
                return generation
            timer = loop.call_later(timeout, _settle, woken)
            self.open_polls += 1
            try:
                await woken
            finally:
                self.open_polls -= 1
                timer.cancel()
            return await self.generation(computer)
        finally:
            waiting.discard(woken)
            if not waiting and self._waiting.get(computer) is waiting:
                del self._waiting[computer]

    def wake(self, computers: list[str]) -> None:
        """Answer the long polls of these computers: their generation moved."""
        for computer in computers:
            for woken in self._waiting.pop(computer, ()):
                _settle(woken)

    def wake_all(self) -> None:
        """Answer every long poll now: each reads its generation again."""
        self.wake(list(self._waiting))

    def stop(self) -> None:
        """The master is stopping: every long poll is answered now, and those still on their
        way at once, rather than cut by the server's shutdown. Nodes simply ask again."""
        self._stopping = True
        self.wake_all()


def _settle(woken: asyncio.Future[None]) -> None:
    if not woken.done():
        woken.set_result(None)
