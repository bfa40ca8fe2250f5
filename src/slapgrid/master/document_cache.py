"""The marshalled getFullComputerInformation answer of each computer, one render per generation.

Nodes poll that answer far more often than it changes, so it is rendered once per generation
however many ask, and its generation doubles as its `ETag`. After a commit the changed
computers are re-rendered in the background (writes within `REFRESH_DELAY` coalesce), so
polling nodes keep hitting the cache.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from slapgrid.master.change_feed import RunBlocking
from slapgrid.master.errors import MasterError
from slapgrid.master.storage import MasterStore
from slapgrid.slap import marshal
from slapgrid.slap.documents import Computer

log = logging.getLogger("slapgrid.master")

REFRESH_DELAY = 0.05  # seconds: writes within it cost one re-render


@dataclass(frozen=True)
class CachedDocument:
    generation: int
    body: bytes

    @property
    def etag(self) -> str:
        return f'"{self.generation}"'

    def matches(self, if_none_match: str) -> bool:
        """Whether an `If-None-Match` header names this version (weak or strong)."""
        tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        return self.etag in tags

    @classmethod
    def of(cls, generation: int, document: Computer) -> CachedDocument:
        return cls(generation, marshal.dumps(document.to_wire()))


Render = Callable[[str], Awaitable[CachedDocument]]
"""Renders a computer's document of its current generation: `await render(computer)`."""


def render_in_thread(store: MasterStore, run_blocking: RunBlocking) -> Render:
    """Renders in this process, off the event loop."""

    def blocking(computer: str) -> CachedDocument:
        return CachedDocument.of(*store.computer_document(computer))

    async def render(computer: str) -> CachedDocument:
        return await run_blocking(blocking, computer)

    return render


class DocumentCache:
    """Rendered documents by computer; event loop thread only."""

    def __init__(
        self,
        render: Render,
        generation: Callable[[str], Awaitable[int]],
        *,
        refresh_delay: float = REFRESH_DELAY,
    ) -> None:
        self.render = render
        self.generation = generation
        self.refresh_delay = refresh_delay
        self._documents: dict[str, CachedDocument] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._pending: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def get(self, computer: str) -> CachedDocument:
        """The document of the current generation (`NotFound` for an unknown computer)."""
        # an unknown computer is refused here, before it costs a lock that would stay
        generation = await self.generation(computer)
        cached = self._documents.get(computer)
        if cached is not None and cached.generation == generation:
            return cached
        async with self._locks.setdefault(computer, asyncio.Lock()):
            cached = self._documents.get(computer)
            if cached is None or cached.generation != await self.generation(computer):
                cached = await self.render(computer)
                self._documents[computer] = cached
        return cached

    def refresh(self, computers: list[str]) -> None:
        """Re-render these computers' documents soon, once for a burst of changes."""
        fresh = [computer for computer in computers if computer not in self._pending]
        if fresh:
            self._pending.update(fresh)
            asyncio.get_running_loop().call_later(self.refresh_delay, self._start, fresh)

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()

    def _start(self, computers: list[str]) -> None:
        for computer in computers:
            self._pending.discard(computer)
            task = asyncio.ensure_future(self._render_quietly(computer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _render_quietly(self, computer: str) -> None:
        try:
            await self.get(computer)
        except MasterError:
            pass  # gone meanwhile: the next poll gets the error
        except Exception:
            log.exception("rendering the document of computer %s failed", computer)
