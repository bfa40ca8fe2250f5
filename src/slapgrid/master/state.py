"""What the master's endpoints share while it serves: the store, the change feed, the
document cache, the networkcache.

Commits happen in threads or on the loop (`runners`); `MasterState` hands each over to the
event loop, where it wakes the long polls of the changed computers and, in a master that
owns its database, re-renders their documents ahead of the fetch that follows. A document
is otherwise rendered when first asked for: a master of 10,000 computers starts at once,
and workers sharing a (PostgreSQL) database render only what their own nodes fetch. There
the commits of other processes arrive through a `notifications.Listener`, documents are
rendered in a process of their own (`render_process`), and the contacts noted here are
written every few seconds, since other processes read them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from slapgrid.errors import first_line
from slapgrid.master.cache.store import CacheStore
from slapgrid.master.change_feed import ChangeFeed, RunBlocking
from slapgrid.master.document_cache import DocumentCache, render_in_thread
from slapgrid.master.generation_reads import GenerationReads
from slapgrid.master.notifications import Listener
from slapgrid.master.pki.authority import Authority
from slapgrid.master.render_process import RenderProcess
from slapgrid.master.storage import CONTACT_DELAY_US, MasterStore

log = logging.getLogger("slapgrid.master")


class MasterState:
    def __init__(
        self,
        store: MasterStore,
        run_blocking: RunBlocking,
        run_brief_write: RunBlocking,
        authority: Authority | None = None,
        cache: CacheStore | None = None,
        render_apart: bool = True,
    ) -> None:
        self.store = store
        self.cache = cache  # None: the networkcache endpoints answer 404
        self.authority = authority  # None: no certificates issued (partitions get "")
        self.run_blocking = run_blocking
        self.run_brief_write = run_brief_write  # `runners.brief_writes`
        self.feed = ChangeFeed(store, GenerationReads(store, run_blocking))
        # on a shared database, renders take the GIL from the loop of a worker that
        # serves thousands of nodes: they run in a process of their own if `render_apart`
        apart = store.shared and render_apart
        self._renders = RenderProcess(store.url, store.busy_timeout) if apart else None
        render = self._renders or render_in_thread(store, run_blocking)
        self.documents = DocumentCache(render, self._fresh_generation)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._contacts_write: asyncio.Future[None] | None = None
        store.add_listener(self._committed)

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        """While the app runs: commits reach this loop."""
        self._loop = asyncio.get_running_loop()
        tasks: list[asyncio.Future[None]] = []
        if self.store.shared:
            store = self.store
            listener = Listener(store.url, store.sender, self._notified, self._caught_up)
            tasks = [asyncio.ensure_future(listener.run()), asyncio.ensure_future(self._contacts())]
        if self._renders is not None:
            self._renders.start()
        try:
            yield
        finally:
            self._loop = None
            self.documents.close()
            if self._renders is not None:
                self._renders.close()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _fresh_generation(self, computer: str) -> int:
        """What a document and its `ETag` must reflect: on a shared database, the
        database's generation, whatever this worker has heard of yet."""
        if not self.store.shared:
            return await self.feed.generation(computer)
        return await self.feed.reads.get(computer)

    def write_contacts_soon(self) -> None:
        """Write the noted contacts in the background: no fetch waits behind the writer."""
        if self._contacts_write is None or self._contacts_write.done():
            self._contacts_write = asyncio.ensure_future(self._write_contacts())

    async def _write_contacts(self) -> None:
        try:
            await self.run_brief_write(self.store.write_contacts)
        except Exception as exc:  # the database away: the next round tries again
            log.warning("writing the nodes' last contacts failed: %s", first_line(exc))

    async def _contacts(self) -> None:
        """Contacts noted here written within `CONTACT_DELAY_US`, even with no next poll."""
        while True:
            await asyncio.sleep(CONTACT_DELAY_US / 1e6)
            await self._write_contacts()

    def _committed(self, changed: dict[str, int]) -> None:
        """Called from whichever thread committed: hand over to the loop."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._changed, list(changed))

    def _notified(self, computers: list[str]) -> None:
        """Another process committed a change to these computers."""
        self.store.forget(computers)
        self.feed.wake(computers)

    def _caught_up(self) -> None:
        """Listening again: whatever was missed meanwhile, every poll reads again."""
        self.store.forget()
        self.feed.wake_all()

    def _changed(self, computers: list[str]) -> None:
        self.feed.wake(computers)
        if not self.store.shared:
            self.documents.refresh(computers)
