"""Documents rendered in a process of their own (a master on PostgreSQL): the same bytes as in
a thread, errors that cross processes in one line, a killed render process replaced."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest

from slapgrid.master.document_cache import render_in_thread
from slapgrid.master.errors import NotFound
from slapgrid.master.render_process import RenderFailed, RenderProcess
from slapgrid.master.storage import MasterStore
from support.master_databases import MasterDatabases
from support.processes import ended, spawned
from support.waiting import wait_for

COMP = "COMP-RENDER"
SR = "https://example.com/render/software.cfg"


@pytest.fixture
def store(master_databases: MasterDatabases) -> Iterator[MasterStore]:
    with master_databases.lend() as url:
        master = MasterStore(url, default_computer=COMP)
        master.supply(COMP, SR)
        yield master
        master.close()


def test_renders_what_a_thread_renders(store: MasterStore) -> None:
    renders = RenderProcess(store.url)

    async def both() -> tuple[object, object]:
        try:
            return await renders(COMP), await render_in_thread(store, asyncio.to_thread)(COMP)
        finally:
            renders.close()

    in_process, in_thread = asyncio.run(both())
    assert in_process == in_thread
    assert SR.encode() in in_thread.body  # type: ignore[attr-defined]


def test_unknown_computer_is_not_found(store: MasterStore) -> None:
    renders = RenderProcess(store.url)

    async def render() -> None:
        try:
            await renders("COMP-NOWHERE")
        finally:
            renders.close()

    with pytest.raises(NotFound, match="COMP-NOWHERE"):
        asyncio.run(render())


def test_database_error_is_one_line(master_databases: MasterDatabases) -> None:
    with master_databases.lend() as url:
        renders = RenderProcess(url.rsplit("/", 1)[0] + "/no_such_database", busy_timeout=2)

    async def render() -> None:
        try:
            await renders(COMP)
        finally:
            renders.close()

    with pytest.raises(RenderFailed) as failed:
        asyncio.run(render())
    message = str(failed.value)
    assert message.startswith(f"rendering computer {COMP}: ") and "\n" not in message
    assert "no_such_database" in message


def test_a_killed_render_process_is_replaced(
    store: MasterStore, caplog: pytest.LogCaptureFixture
) -> None:
    renders = RenderProcess(store.url)
    before = {process.pid for process in spawned(psutil.Process())}

    async def kill_between_renders() -> bytes:
        try:
            first = await renders(COMP)
            (process,) = [p for p in spawned(psutil.Process()) if p.pid not in before]
            os.kill(process.pid, signal.SIGKILL)
            await asyncio.to_thread(process.wait, 10)
            with caplog.at_level(logging.WARNING, "slapgrid.master"):
                again = await renders(COMP)
            assert again == first
            return again.body
        finally:
            renders.close()

    assert SR.encode() in asyncio.run(kill_between_renders())
    assert "the render process ended; rendering COMP-RENDER in a new one" in caplog.text


def test_closing_ends_the_render_process(store: MasterStore) -> None:
    renders = RenderProcess(store.url)
    before = {process.pid for process in spawned(psutil.Process())}

    async def start_and_close() -> list[psutil.Process]:
        renders.start()
        await renders(COMP)
        started = [p for p in spawned(psutil.Process()) if p.pid not in before]
        renders.close()
        return started

    (process,) = asyncio.run(start_and_close())
    wait_for(lambda: ended(process), what="the render process to end")


MASTER = """
import asyncio, sys
from slapgrid.master.render_process import RenderProcess

async def serve():
    renders = RenderProcess(sys.argv[1])
    await renders("COMP-RENDER")
    print("rendered", flush=True)
    await asyncio.to_thread(sys.stdin.read)

asyncio.run(serve())
"""


def test_a_master_killed_outright_takes_its_render_process_along(store: MasterStore) -> None:
    master = subprocess.Popen(
        [sys.executable, "-c", MASTER, store.url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert master.stdout is not None and master.stdout.readline() == "rendered\n"
        (process,) = spawned(psutil.Process(master.pid))
        master.kill()
        master.wait(10)
        wait_for(lambda: ended(process), what="the render process to end")
    finally:
        master.kill()
        master.wait(10)
