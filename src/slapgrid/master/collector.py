"""Garbage collection paced by the clock in a master's process, not by its allocations.

CPython collects the young generation when allocations outnumber deallocations by 700.
A fleet's master renews its open long polls all the time: each renewal frees the ninety
or so objects of an old poll and makes as many for the new one, so that count stays low
while the young generations fill with the new polls' objects. With 10,000 nodes
(bench_fleet.py) the middle generation held 50,000 to 120,000 objects when it was
collected, every 3 to 6 s, and each collection stopped every call for 30 to 83 ms.

So the master's process turns the automatic collector off, and its event loop collects
the young generations every `YOUNG_EVERY` seconds: a few thousand objects, a few
milliseconds at most. Objects that survive are old, and only a full collection scans
them; with 10,000 open polls it takes 0.7 to 1 s and, in the fleet, freed nothing (the
young collections reclaim the cycles calls leave), so it runs every `FULL_EVERY` seconds.
"""

from __future__ import annotations

import asyncio
import gc
import time

YOUNG_EVERY = 0.1
FULL_EVERY = 3600.0


async def pace_collections(
    young_every: float = YOUNG_EVERY, full_every: float = FULL_EVERY
) -> None:
    """Collect on the clock until cancelled, then give the collection back to CPython.

    What the process made before (its start: modules, the route table) is frozen first:
    no collection scans it again."""
    gc.freeze()
    gc.disable()
    last_full = time.monotonic()
    try:
        while True:
            await asyncio.sleep(young_every)
            if time.monotonic() - last_full < full_every:
                gc.collect(1)
            else:
                gc.collect()
                last_full = time.monotonic()
    finally:
        gc.enable()
