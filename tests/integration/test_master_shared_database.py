"""Two masters on one PostgreSQL database, as two workers are: no memory shared, yet a change
made through one is seen and long-polled through the other at once; and a node that finds
its master again after a restart gets the change made meanwhile at once."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import event, update
from sqlalchemy.engine import make_url

from master_site import small_computer
from slapgrid.master import notifications
from slapgrid.master.server import MasterServer
from slapgrid.master.storage import MasterStore
from slapgrid.master.tables import ComputerRow
from slapgrid.node.config import NodeConfig
from slapgrid.node.daemon.changes import LONG_POLL, Observed, Watcher, WatchEvent, WatchFailed
from slapgrid.slap import changes
from slapgrid.slap.client import SlapClient
from support.addresses import free_port
from support.postgres import Cluster
from support.waiting import wait_for

pytestmark = pytest.mark.integration

COMP = "COMP-SHARED"
SR = "https://example.com/software/shared/software.cfg"
# a poll held 30 s answered well before: woken by the notification, not its time-out (the
# margin is a busy machine's, not a latency target: bench_fleet.py measures that)
WOKEN = 10.0
LISTENERS = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with Cluster() as running:
        yield running


@pytest.fixture
def masters(cluster: Cluster, tmp_path: Path) -> Iterator[tuple[MasterServer, MasterServer]]:
    """Masters A and B, each with its own store on the same new database, both listening."""
    url = cluster.create_database()
    stores = [MasterStore(url, default_computer=COMP) for _ in range(2)]
    try:
        with (
            MasterServer(stores[0], insecure=True) as a,
            MasterServer(stores[1], insecure=True) as b,
        ):
            wait_for(lambda: listeners(cluster, url) == 2, what="both masters to listen")
            with SlapClient(a.url, COMP) as client:
                client.load_computer_configuration(small_computer(COMP, 2))
            yield a, b
    finally:
        for store in stores:
            store.close()


def listeners(cluster: Cluster, url: str) -> int:
    """How many connections listen on the database of `url`."""
    return int(cluster.psql(f"{LISTENERS} AND datname = '{make_url(url).database}'"))


def generation(master: MasterServer, since: int = changes.ANY_GENERATION, wait: float = 0) -> int:
    query = changes.poll_query(COMP, since, wait)
    answer = httpx.get(master.url + changes.CHANGES_PATH, params=query, timeout=wait + 10)
    answer.raise_for_status()
    return changes.parse_generation(answer.content)


class Poll(threading.Thread):
    """A long poll of `master` held in a thread: its answer and when it came."""

    def __init__(self, master: MasterServer, since: int) -> None:
        super().__init__(daemon=True)
        self.master, self.since = master, since
        self.answer: int | None = None
        self.answered_at = 0.0

    def run(self) -> None:
        self.answer = generation(self.master, self.since, wait=30)
        self.answered_at = time.monotonic()


def held(master: MasterServer, since: int) -> Poll:
    poll = Poll(master, since)
    poll.start()
    wait_for(lambda: master.state.feed.open_polls == 1, what="the poll to be held")
    return poll


def assert_woken_through(a: MasterServer, b: MasterServer, since: int, state: str) -> int:
    """A poll held on B since `since` is woken by a supply through A: its answer."""
    poll = held(b, since)
    with SlapClient(a.url, COMP) as client:
        client.supply(SR, state=state)
        changed_at = time.monotonic()
    poll.join(10)
    assert poll.answer is not None and poll.answer != since
    assert poll.answered_at - changed_at < WOKEN
    return poll.answer


def test_a_poll_on_b_wakes_at_a_change_through_a(
    masters: tuple[MasterServer, MasterServer],
) -> None:
    a, b = masters
    answer = assert_woken_through(a, b, generation(b), "available")
    assert answer == generation(a) == generation(b)


def test_b_serves_the_new_document_right_after_a_commit_through_a(
    masters: tuple[MasterServer, MasterServer],
) -> None:
    a, b = masters
    path = "getFullComputerInformation"
    first = httpx.get(b.url + path, params={"computer_id": COMP})
    assert first.status_code == 200 and SR.encode() not in first.content
    with SlapClient(a.url, COMP) as client:
        client.supply(SR)
    headers = {"If-None-Match": first.headers["etag"]}
    second = httpx.get(b.url + path, params={"computer_id": COMP}, headers=headers)
    assert second.status_code == 200 and SR.encode() in second.content
    assert second.headers["etag"] != first.headers["etag"]


def test_a_killed_listener_listens_again_and_misses_nothing(
    cluster: Cluster, masters: tuple[MasterServer, MasterServer]
) -> None:
    a, b = masters
    before = generation(b)
    poll = held(b, before)
    cluster.psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE query LIKE 'LISTEN%' AND datname = '{make_url(a.store.url).database}'"
    )
    with SlapClient(a.url, COMP) as client:
        client.supply(SR)  # while no master listens, most likely: lost, then caught up
    poll.join(10)  # answered, by the change or by B listening again, not after 30 s
    assert poll.answer is not None
    if poll.answer == before:  # woken as B listened again: it asks again, as a node does
        assert generation(b, before, wait=30) != before
    assert generation(b) == generation(a) != before

    wait_for(lambda: listeners(cluster, a.store.url) == 2, what="both masters to listen again")
    assert_woken_through(a, b, generation(b), "destroyed")


def test_masters_listen_again_after_a_postgresql_restart(
    cluster: Cluster, masters: tuple[MasterServer, MasterServer]
) -> None:
    a, b = masters
    before = generation(b)
    poll = held(b, before)
    cluster.restart()
    poll.join(30)  # answered once B listens again: it may have missed a change
    assert poll.answer == before
    wait_for(lambda: listeners(cluster, a.store.url) == 2, what="both masters to listen again")
    assert_woken_through(a, b, before, "available")


def test_every_computer_of_a_large_write_is_notified(
    cluster: Cluster, masters: tuple[MasterServer, MasterServer]
) -> None:
    """More computers than one payload holds: PostgreSQL takes every chunk."""
    a, _ = masters
    names = [f"COMP-{i:04}-{'x' * 240}" for i in range(400)]
    for name in names:
        a.store.ensure_computer(name)
    computers = ComputerRow.__table__
    bump = update(computers).where(computers.c.reference.in_(names))
    statement = notifications.notifying(bump.values(generation=computers.c.generation + 1))
    parameters = {"payloads": notifications.payloads("test", names)}
    with psycopg.connect(
        dbname=make_url(a.store.url).database, host=str(cluster.socket_dir), user="postgres"
    ) as connection:
        connection.autocommit = True
        connection.execute(f"LISTEN {notifications.CHANNEL}")
        a.store.write_with(lambda session: session.execute(statement, parameters))
        received: list[str] = []
        for notification in connection.notifies(timeout=10):
            decoded = notifications.decode(notification.payload)
            assert decoded is not None and decoded[0] == "test"
            received += decoded[1]
            if len(received) >= len(names):
                break
    assert received == names


def test_a_node_back_after_a_master_restart_gets_the_change_made_meanwhile(
    cluster: Cluster,
) -> None:
    url = cluster.create_database()
    first, other, restarted = (MasterStore(url, default_computer=COMP) for _ in range(3))
    port = free_port()
    config = NodeConfig(
        master_url=f"http://127.0.0.1:{port}/",
        computer_id=COMP,
        instance_root=Path("/"),
        software_root=Path("/"),
    )
    events: queue.SimpleQueue[WatchEvent] = queue.SimpleQueue()
    watcher = Watcher(
        config, lambda c: SlapClient(c.master_url, c.computer_id), events.put, poll_interval=60
    )
    try:
        with MasterServer(first, port=port, insecure=True):
            watcher.start()
            baseline = events.get(timeout=10)
            assert isinstance(baseline, Observed) and baseline.mode == LONG_POLL
        assert isinstance(events.get(timeout=10), WatchFailed)  # its master is gone
        other.supply(COMP, SR)  # meanwhile, through another worker of the database
        with MasterServer(restarted, port=port, insecure=True):
            back_at = time.monotonic()
            event = events.get(timeout=40)
            while isinstance(event, WatchFailed):  # tried again before the restart
                event = events.get(timeout=40)
            watcher.stop.set()
        assert isinstance(event, Observed) and event.recovered and event.mode == LONG_POLL
        # at its first poll (after its back-off), not at the end of a 30 s long poll
        assert time.monotonic() - back_at < 10
        assert event.generation != baseline.generation
        assert (SR, "available") in event.snapshot.software
    finally:
        for store in (first, other, restarted):
            store.close()


def test_a_contact_with_one_master_shows_through_the_other(
    masters: tuple[MasterServer, MasterServer],
) -> None:
    a, b = masters
    assert not b.store.computer_status(COMP)["text"].startswith("#access")
    assert httpx.get(a.url + "getFullComputerInformation", params={"computer_id": COMP})
    # written by A within a few seconds, with no further poll to trigger it
    wait_for(
        lambda: b.store.computer_status(COMP)["text"] == f"#access {COMP}",
        what="A's contact to be written",
    )


def test_a_shared_store_remembers_a_generation_only_until_told_it_moved(
    cluster: Cluster,
) -> None:
    """The feed of a worker reads memory (kept by notifications); an ETag reads the database."""
    url = cluster.create_database()
    a, b = MasterStore(url, default_computer=COMP), MasterStore(url)
    try:
        before = b.generation(COMP)
        a.supply(COMP, SR)  # moves the generation through A: B has heard nothing yet
        moved = a.generation(COMP, fresh=True)
        assert moved != before and b.known_generation(COMP) == before
        assert b.generation(COMP, fresh=True) == moved  # what a document must reflect
        b.forget([COMP])  # the notification arrives
        assert b.known_generation(COMP) is None and b.generation(COMP) == moved
        b.forget()  # listening again after a lost connection: nothing is trusted
        assert b.known_generation(COMP) is None
    finally:
        a.close()
        b.close()


def test_a_shared_store_remembers_its_own_commits_unless_a_change_was_heard_meanwhile(
    cluster: Cluster,
) -> None:
    """Its own commit's generations are the newest it knows: no read for its polls. But a
    notification heard while it committed may be newer: then nothing is remembered."""
    store = MasterStore(cluster.create_database(), default_computer=COMP)
    try:
        store.supply(COMP, SR)
        assert store.known_generation(COMP) == store.generation(COMP, fresh=True)
        event.listen(store._writer, "commit", lambda _connection: store.forget([]))
        store.supply(COMP, SR, "destroyed")
        assert store.known_generation(COMP) is None
    finally:
        store.close()


def test_a_listener_skips_its_own_notifications(cluster: Cluster) -> None:
    """Its own commits a worker has handled already; others' reach it, in commit order."""
    url = cluster.create_database()
    heard: list[list[str]] = []
    sent = threading.Event()

    async def listen() -> None:
        listener = notifications.Listener(url, "mine", heard.append, sent.set)
        task = asyncio.ensure_future(listener.run())
        try:
            await asyncio.to_thread(sent.wait, 10)  # listening: caught up
            with psycopg.connect(
                dbname=make_url(url).database, host=str(cluster.socket_dir), user="postgres"
            ) as connection:
                connection.autocommit = True
                for sender, computer in (("mine", "COMP-MINE"), ("other", "COMP-OTHER")):
                    for payload in notifications.payloads(sender, [computer]):
                        connection.execute(
                            "SELECT pg_notify(%s, %s)", (notifications.CHANNEL, payload)
                        )
            for _ in range(1000):
                if heard:
                    break
                await asyncio.sleep(0.01)
        finally:
            task.cancel()

    asyncio.run(listen())
    assert sent.is_set() and heard == [["COMP-OTHER"]]
