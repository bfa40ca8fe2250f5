"""Input that must never break the master: what it stores, what it buffers, what it remembers.

The memory tests run `slapgrid master start` in its own process, so its RSS is the master's
alone.
"""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from master_site import served, small_computer, wait_ready
from slapgrid.master.app import MAX_BODY_BYTES
from slapgrid.master.server import MasterServer
from slapgrid.slap import marshal
from slapgrid.slap.client import SlapClient
from support.addresses import free_port

pytestmark = pytest.mark.integration

COMP = "COMP-HOSTILE"
SR = "https://example.com/software/web/software.cfg"
MiB = 1 << 20


@pytest.fixture
def master(tmp_path: Path, database: str) -> Iterator[MasterServer]:
    with served(tmp_path, COMP, database=database) as server:
        with SlapClient(server.url, COMP) as node:
            node.load_computer_configuration(small_computer(COMP, 1))
            node.supply(SR)
            node.request(SR, "web")
        yield server


def test_a_build_log_ending_in_colour_codes_is_stored_clean_and_whole(
    master: MasterServer,
) -> None:
    log = "x" * 200 + "\nError: \x1b[31mbuild failed\x1b[0m\x07\x00\ufffe\x1b]0;title\x07"
    reply = httpx.post(
        master.url + "softwareInstanceError",
        data={"computer_id": COMP, "computer_partition_id": "slappart0", "error_log": log},
    )
    assert reply.status_code == 200, reply.text
    reply = httpx.post(
        master.url + "softwareReleaseError",
        data={"computer_id": COMP, "url": SR, "error_log": "\x1b[1;31mboom\x1b[0m\x01"},
    )
    assert reply.status_code == 200, reply.text

    status = master.store.partition_status(COMP, "slappart0")
    assert status["text"] == "#error while instanciating: " + "x" * 200 + "\nError: build failed"
    with SlapClient(master.url, COMP) as node:  # every later read still answers
        assert node.computer().partitions[0].partition_id == "slappart0"


def test_a_repeated_parameter_is_refused(master: MasterServer) -> None:
    reply = httpx.get(
        master.url + "getFullComputerInformation",
        params=[("computer_id", COMP), ("computer_id", "OTHER")],
    )
    assert reply.status_code == 400
    assert "more than once" in reply.text


def test_a_control_character_in_a_header_is_refused(master: MasterServer) -> None:
    """RFC 9110: no control character in a field value; refused before any check."""
    reply = httpx.get(
        master.url + "getFullComputerInformation",
        params={"computer_id": COMP},
        headers={"Authorization": "X-SlapPartition computer_id=x, computer_partition_id=\x01"},
    )
    assert reply.status_code == 400


def test_a_body_that_is_not_a_form_is_refused(master: MasterServer) -> None:
    reply = httpx.post(master.url + "softwareInstanceBang", json={"computer_id": COMP})
    assert reply.status_code == 415


def lower_file_limit() -> None:
    """The common default: 1,024 open files, unless the master raises it."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))


def master_process(tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "slapgrid",
        "master",
        "start",
        "--insecure",
        "--port",
        str(port),
    ]
    process = subprocess.Popen(
        [*command, "--data-dir", str(tmp_path), "--computer-id", COMP],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lower_file_limit,
    )
    url = f"http://127.0.0.1:{port}/"
    wait_ready(url, process)
    return process, url


@pytest.fixture
def master_alone(tmp_path: Path) -> Iterator[tuple[psutil.Process, str]]:
    process, url = master_process(tmp_path)
    try:
        yield psutil.Process(process.pid), url
    finally:
        process.terminate()
        process.wait(30)


def test_chunked_bodies_are_bounded_like_declared_ones(
    master_alone: tuple[psutil.Process, str],
) -> None:
    process, url = master_alone
    before = process.memory_info().rss
    size = 200 * MiB

    async def chunks() -> object:
        block = b"x" * MiB
        for _ in range(size // MiB):
            yield block

    async def send(client: httpx.AsyncClient) -> int | None:
        try:
            reply = await client.post(
                url + "softwareInstanceBang",
                content=chunks(),
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
        except httpx.TransportError:
            return None  # the master stopped reading: as good as a 413
        return reply.status_code

    async def attack() -> list[int | None]:
        async with httpx.AsyncClient(timeout=60) as client:
            return list(await asyncio.gather(*(send(client) for _ in range(3))))

    statuses = asyncio.run(attack())
    assert set(statuses) <= {413, None}, statuses
    grown = process.memory_info().rss - before
    assert grown < 3 * MAX_BODY_BYTES + 32 * MiB, f"the master grew by {grown / MiB:.0f} MiB"
    assert httpx.get(url + "getComputerStatus", params={"computer_id": COMP}).is_success


def test_unknown_computer_ids_cost_no_memory(master_alone: tuple[psutil.Process, str]) -> None:
    process, url = master_alone

    async def ask(client: httpx.AsyncClient, first: int) -> None:
        for number in range(first, first + 125):
            reply = await client.get(
                url + "getFullComputerInformation",
                params={"computer_id": f"{number:08d}" + "u" * 8000},
            )
            assert reply.status_code == 404

    async def flood(rounds: int) -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            await asyncio.gather(*(ask(client, rounds * 10_000 + i * 125) for i in range(8)))

    asyncio.run(flood(0))  # the master's own caches and pools reach their size
    before = process.memory_info().rss
    for rounds in range(1, 3):
        asyncio.run(flood(rounds))
    grown = process.memory_info().rss - before
    # 2,000 ids of 8 kB: kept, they would take more than 16 MiB
    assert grown < 8 * MiB, f"the master grew by {grown / MiB:.1f} MiB"


def test_a_bang_message_is_cleaned_and_bounded(master: MasterServer) -> None:
    reply = httpx.post(
        master.url + "softwareInstanceBang",
        data={
            "computer_id": COMP,
            "computer_partition_id": "slappart0",
            "message": "\x1b[33m" + "m" * 30_000 + "\x1b[0m",
        },
    )
    assert reply.status_code == 200, reply.text
    text = master.store.partition_status(COMP, "slappart0")["text"]
    assert text.startswith("#error bang called: ...") and text.endswith("m" * 100)
    assert "\x1b" not in text and len(text) < 20_100
    assert marshal.dumps(master.store.snapshot())  # everything stored is XML text


def test_the_master_raises_its_open_file_limit(master_alone: tuple[psutil.Process, str]) -> None:
    process, _ = master_alone
    soft, hard = process.rlimit(psutil.RLIMIT_NOFILE)
    assert soft == hard or soft >= 1 << 20
