"""The change feed: each computer's generation, and long polls woken as soon as it moves."""

from __future__ import annotations

import asyncio
import contextlib
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
        self._events: dict[str, asyncio.Event] = {}
        self.open_polls = 0
        """Long polls waiting for a change right now."""

    async def generation(self, computer: str) -> int:
        """The computer's generation (`NotFound` if unknown), without a query when known."""
        known = self.store.known_generation(computer)
        if known is not None:
            return known
        return await self.reads.get(computer)

    async def wait(self, computer: str, since: int, timeout: float) -> int:
        """The generation, as soon as it differs from `since` or after `timeout` seconds."""
        await self.generation(computer)  # NotFound for an unknown one: no event kept for it
        event = self._event(computer)  # before reading again, so no change slips between
        generation = await self.generation(computer)
        if generation == since:
            self.open_polls += 1
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), timeout)
            finally:
                self.open_polls -= 1
            generation = await self.generation(computer)
        return generation

    def wake(self, computers: list[str]) -> None:
        """Answer the long polls of these computers: their generation moved."""
        for computer in computers:
            event = self._events.pop(computer, None)
            if event is not None:
                event.set()

    def wake_all(self) -> None:
        """Answer every long poll now (the master is stopping): nodes simply ask again."""
        self.wake(list(self._events))

    def _event(self, computer: str) -> asyncio.Event:
        event = self._events.get(computer)
        if event is None:
            event = self._events[computer] = asyncio.Event()
        return event
