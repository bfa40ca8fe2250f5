"""Garbage collection paced by a master's event loop (`collector`)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from slapgrid.master.collector import pace_collections


class Cycle:
    """An object that refers to itself: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def collector_restored() -> Iterator[None]:
    yield
    gc.unfreeze()  # what pace_collections froze is the test runner's
    gc.enable()


@contextlib.asynccontextmanager
async def paced(full_every: float) -> AsyncIterator[list[int]]:
    """Pacing every 10 ms; yields the generations collected since (oldest last)."""
    generations: list[int] = []

    def noted(phase: str, info: dict[str, Any]) -> None:
        if phase == "stop":
            generations.append(info["generation"])

    gc.callbacks.append(noted)
    pacer = asyncio.create_task(pace_collections(young_every=0.01, full_every=full_every))
    try:
        await asyncio.sleep(0)  # the pacer has begun
        yield generations
    finally:
        pacer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pacer
        gc.callbacks.remove(noted)


async def collections(generations: list[int], count: int) -> None:
    while len(generations) < count:
        await asyncio.sleep(0.005)


def freed(cycle: Cycle) -> asyncio.Event:
    event = asyncio.Event()
    weakref.finalize(cycle, event.set)
    return event


def test_the_young_are_collected_on_the_clock_and_the_collector_given_back() -> None:
    async def scenario() -> None:
        async with paced(full_every=3600) as generations:
            assert not gc.isenabled()  # no collection at an allocation count
            gone = freed(Cycle())
            await asyncio.wait_for(gone.wait(), 30)
            await collections(generations, 3)
            assert set(generations) == {1}
        assert gc.isenabled()

    asyncio.run(scenario())


def test_what_survived_a_collection_waits_for_the_full_one() -> None:
    async def scenario(full_every: float) -> bool:
        async with paced(full_every) as generations:
            cycle = Cycle()
            gone = freed(cycle)
            await collections(generations, 1)  # it survived: it is old now
            del cycle
            await collections(generations, 4)
            return gone.is_set()

    assert not asyncio.run(scenario(full_every=3600))
    assert asyncio.run(scenario(full_every=0))
