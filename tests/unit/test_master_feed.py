"""The change feed and the document cache of the master, without Starlette or HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from slapgrid.master.change_feed import ChangeFeed
from slapgrid.master.document_cache import CachedDocument, DocumentCache, render_in_thread
from slapgrid.master.errors import NotFound
from slapgrid.master.generation_reads import GenerationReads
from slapgrid.master.storage import MasterStore
from slapgrid.slap import changes
from slapgrid.slap.errors import ProtocolError

COMP = "COMP-FEED"
SR = "https://example.com/feed/software.cfg"


@pytest.fixture
def store(database: str) -> Iterator[MasterStore]:
    master = MasterStore(database, default_computer=COMP)
    yield master
    master.close()


# --- the wire format -----------------------------------------------------------------------


def test_poll_query_is_parsed_back() -> None:
    query = changes.poll_query(COMP, 17, 30.0)
    assert query == {"computer_id": COMP, "since": "17", "timeout": "30"}
    assert changes.parse_poll(query["since"], query["timeout"]) == (17, 30.0)


def test_poll_defaults_and_cap() -> None:
    assert changes.parse_poll(None, None) == (changes.ANY_GENERATION, 30.0)
    assert changes.parse_poll("3", "3600") == (3, changes.MAX_WAIT_SECONDS)
    assert changes.parse_poll("3", "-1") == (3, 0.0)
    for since, timeout in (("x", "1"), ("1", "soon")):
        with pytest.raises(ValueError):
            changes.parse_poll(since, timeout)


def test_generation_round_trip() -> None:
    assert changes.encode_generation(17) == b'{"generation":17}'
    assert changes.parse_generation(changes.encode_generation(17)) == 17


def test_change_feed_answer_is_checked() -> None:
    assert changes.parse_generation(b'{"generation": 17}') == 17
    for body in (b"<html>", b'{"generation": "17"}', b"[]", b"{}"):
        with pytest.raises(ProtocolError):
            changes.parse_generation(body)


# --- the feed ------------------------------------------------------------------------------


def test_reads_waiting_together_are_one_query_and_later_ones_the_next(store: MasterStore) -> None:
    store.ensure_computer("COMP-OTHER")
    queries: list[list[str]] = []
    sent = asyncio.Event()
    release = asyncio.Event()

    async def run_blocking(function: Any, computers: list[str]) -> Any:
        queries.append(sorted(computers))
        sent.set()
        await release.wait()  # the query in flight
        return function(computers)

    async def scenario() -> list[Any]:
        reads = GenerationReads(store, run_blocking)
        first = [asyncio.ensure_future(reads.get(c)) for c in (COMP, COMP, "COMP-OTHER")]
        await sent.wait()
        later = [asyncio.ensure_future(reads.get(c)) for c in (COMP, "COMP-NONE")]
        await asyncio.sleep(0)
        release.set()
        return await asyncio.gather(*first, *later, return_exceptions=True)

    answers = asyncio.run(scenario())
    # the later reads waited for a query of their own: the first may predate their commit
    assert queries == [[COMP, "COMP-OTHER"], [COMP, "COMP-NONE"]]
    mine, other = store.generation(COMP), store.generation("COMP-OTHER")
    assert answers[:4] == [mine, mine, other, mine]
    assert isinstance(answers[4], NotFound)


def test_feed_answers_at_once_when_the_generation_differs(store: MasterStore) -> None:
    feed = ChangeFeed(store, GenerationReads(store, asyncio.to_thread))
    generation = store.generation(COMP)
    assert asyncio.run(feed.wait(COMP, changes.ANY_GENERATION, 60)) == generation


def test_feed_times_out_with_the_same_generation(store: MasterStore) -> None:
    feed = ChangeFeed(store, GenerationReads(store, asyncio.to_thread))
    generation = store.generation(COMP)
    assert asyncio.run(feed.wait(COMP, generation, 0.01)) == generation


def test_feed_wakes_up_on_a_commit(store: MasterStore) -> None:
    feed = ChangeFeed(store, GenerationReads(store, asyncio.to_thread))
    generation = store.generation(COMP)

    async def commit_then_wake() -> None:
        await asyncio.to_thread(store.supply, COMP, SR)
        feed.wake([COMP])

    async def scenario() -> int:
        waiting = asyncio.ensure_future(feed.wait(COMP, generation, 60))
        await asyncio.sleep(0)  # the poll registers before the commit
        await commit_then_wake()
        return await asyncio.wait_for(waiting, 10)

    assert asyncio.run(scenario()) == store.generation(COMP) > generation


def test_a_stopping_feed_answers_every_poll_at_once_even_the_late_ones(
    store: MasterStore,
) -> None:
    """A poll still on its way when the master stops is answered, not cut by the shutdown."""
    feed = ChangeFeed(store, GenerationReads(store, asyncio.to_thread))
    generation = store.generation(COMP)

    async def scenario() -> list[int]:
        waiting = asyncio.ensure_future(feed.wait(COMP, generation, 60))
        while not feed.open_polls:  # held
            await asyncio.sleep(0)
        feed.stop()
        late = await asyncio.wait_for(feed.wait(COMP, generation, 60), 10)
        return [await asyncio.wait_for(waiting, 10), late]

    assert asyncio.run(scenario()) == [generation, generation]
    assert feed.open_polls == 0


def test_feed_of_an_unknown_computer_is_not_found(store: MasterStore) -> None:
    feed = ChangeFeed(store, GenerationReads(store, asyncio.to_thread))
    with pytest.raises(NotFound):
        asyncio.run(feed.wait("NOPE", changes.ANY_GENERATION, 0))


# --- the document cache --------------------------------------------------------------------


def test_etag_is_the_generation() -> None:
    document = CachedDocument(5, b"<marshal/>")
    assert document.etag == '"5"'
    assert document.matches('"4", W/"5"') and document.matches('"5"')
    assert not document.matches('"4"') and not document.matches("")


class CountingStore:
    """The store, counting how many times a document is rendered."""

    def __init__(self, store: MasterStore) -> None:
        self.store = store
        self.renders = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def computer_document(self, computer: str) -> Any:
        self.renders += 1
        return self.store.computer_document(computer)


def cache_of(store: MasterStore) -> tuple[DocumentCache, CountingStore]:
    counting = CountingStore(store)
    feed = ChangeFeed(store, GenerationReads(store, asyncio.to_thread))
    cache = DocumentCache(
        render_in_thread(counting, asyncio.to_thread), feed.generation, refresh_delay=0
    )
    return cache, counting


def test_cache_renders_once_per_generation(store: MasterStore) -> None:
    cache, counting = cache_of(store)

    async def scenario() -> tuple[CachedDocument, CachedDocument, CachedDocument]:
        first, again = await asyncio.gather(cache.get(COMP), cache.get(COMP))
        await asyncio.to_thread(store.supply, COMP, SR)
        return first, again, await cache.get(COMP)

    first, again, fresh = asyncio.run(scenario())
    assert first is again and counting.renders == 2
    assert fresh.generation == store.generation(COMP) > first.generation
    assert SR.encode() in fresh.body and SR.encode() not in first.body


def test_refresh_renders_in_the_background(store: MasterStore) -> None:
    cache, counting = cache_of(store)

    async def scenario() -> None:
        await cache.get(COMP)
        await asyncio.to_thread(store.supply, COMP, SR)
        cache.refresh([COMP])
        cache.refresh([COMP])  # a burst: one render
        for _ in range(1000):
            if counting.renders == 2:
                break
            await asyncio.sleep(0.01)
        await cache.get(COMP)  # served from what the refresh rendered

    asyncio.run(scenario())
    assert counting.renders == 2
