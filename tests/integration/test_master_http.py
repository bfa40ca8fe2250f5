"""The embedded master over real HTTP on 127.0.0.1: lifecycle, errors, concurrency, crashes."""

from __future__ import annotations

import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType

import httpx
import pytest

from master_site import get, partition, post, served, small_computer
from slapgrid.master.runners import WRITERS
from slapgrid.master.server import MasterServer
from slapgrid.master.storage import MasterStore
from slapgrid.slap import marshal
from slapgrid.slap.client import SlapClient
from slapgrid.slap.errors import HTTPStatusError, NotFoundError
from support.waiting import wait_for

pytestmark = pytest.mark.integration

COMP = "COMP-HTTP"
SR = "https://example.com/software/web/software.cfg"
FRONTEND = "https://example.com/software/frontend/software.cfg"


@pytest.fixture
def master(tmp_path: Path, database: str) -> Iterator[MasterServer]:
    with served(tmp_path, COMP, database=database) as server:
        yield server


@pytest.fixture
def node(master: MasterServer) -> Iterator[SlapClient]:
    with SlapClient(master.url, COMP) as client:
        yield client


def test_full_lifecycle(master: MasterServer, node: SlapClient) -> None:
    assert node.computer().partitions == []  # the default computer answers before format
    node.load_computer_configuration(small_computer(COMP, 4))
    node.supply(SR)
    assert [s.url for s in node.computer().software_releases] == [SR]
    node.building_software_release(SR)
    node.available_software_release(SR)

    user = SlapClient(master.url, "user")
    root = user.request(SR, "web", parameters={"port": 8080})
    assert (root.computer_id, root.partition_id) == (COMP, "slappart0")
    deployed = partition(node.computer(), "slappart0")
    assert deployed.requested_state == "started" and deployed.software_release_url == SR
    assert deployed.parameters["port"] == "8080" and deployed.instance_title == "web"
    assert deployed.ip_list == [("slaptap0", "10.0.1.1")]
    first_timestamp = deployed.timestamp

    # the instance deploys, requests a child and a shared frontend, publishes, reports
    node.started("slappart0")
    child = node.request(SR, "db", software_type="database", requester="slappart0")
    assert child.partition_id == "slappart1"
    node.supply(FRONTEND)
    node.request(FRONTEND, "frontend")  # a user's frontend instance, on slappart2
    shared = node.request(
        FRONTEND, "web-front", shared=True, parameters={"url": "http://x"}, requester="slappart0"
    )
    assert shared.partition_id == "slappart2"
    node.set_connection("slappart1", {"dsn": "postgresql://db"})
    frontend = partition(node.computer(), "slappart2")
    [slave] = frontend.slave_instance_list
    node.set_connection("slappart2", {"site": "https://front"}, slave["slave_reference"])

    after = partition(node.computer(), "slappart0")
    assert int(after.timestamp) > int(first_timestamp)  # its child and its shared published
    assert after.access_status == "#access Instance correctly started"
    assert node.request(SR, "db", software_type="database", requester="slappart0").connection == {
        "dsn": "postgresql://db"
    }
    again = node.request(
        FRONTEND, "web-front", shared=True, parameters={"url": "http://x"}, requester="slappart0"
    )
    assert again.connection == {"site": "https://front"}
    assert node.register_partition("slappart0").synced is True

    # stop, then destroy the whole tree; the node reports, partitions come back free
    user.request(SR, "web", parameters={"port": 8080}, state="stopped")
    assert partition(node.computer(), "slappart0").requested_state == "stopped"
    node.stopped("slappart0")
    user.request(SR, "web", parameters={"port": 8080}, state="destroyed")
    computer = node.computer()
    assert {p.partition_id for p in computer.partitions if p.requested_state == "destroyed"} >= {
        "slappart0",
        "slappart1",
    }
    node.destroyed("slappart1")
    node.destroyed("slappart0")
    computer = node.computer()
    assert partition(computer, "slappart0").is_free and partition(computer, "slappart1").is_free
    assert partition(computer, "slappart2").slave_instance_list == []  # requester gone
    assert user.request(SR, "web").partition_id == "slappart0"  # reusable


def test_etag_and_long_poll(master: MasterServer, node: SlapClient) -> None:
    first = get(master, "getFullComputerInformation", computer_id=COMP)
    etag = first.headers["etag"]
    assert first.headers["content-type"] == "text/xml; charset=utf-8"
    first.content.decode("ascii")
    unchanged = httpx.get(
        master.url + "getFullComputerInformation",
        params={"computer_id": COMP},
        headers={"If-None-Match": etag},
    )
    assert unchanged.status_code == 304 and unchanged.content == b""
    generation = int(etag.strip('"'))
    assert get(master, "slapgrid/changes", computer_id=COMP, since="0").json() == {
        "generation": generation
    }

    def change_soon() -> None:
        time.sleep(0.3)
        node.supply(SR)

    threading.Thread(target=change_soon).start()
    started = time.monotonic()
    moved = get(master, "slapgrid/changes", computer_id=COMP, since=str(generation), timeout="20")
    assert 0.2 < time.monotonic() - started < 5
    assert moved.json()["generation"] > generation
    fresh = httpx.get(
        master.url + "getFullComputerInformation",
        params={"computer_id": COMP},
        headers={"If-None-Match": etag},
    )
    assert fresh.status_code == 200 and SR.encode() in fresh.content
    started = time.monotonic()
    idle = get(
        master,
        "slapgrid/changes",
        computer_id=COMP,
        since=str(moved.json()["generation"]),
        timeout="0.3",
    )
    assert idle.json() == moved.json() and time.monotonic() - started >= 0.3
    assert get(master, "slapgrid/changes", computer_id="NOPE").status_code == 404


def test_status_and_misc_endpoints(master: MasterServer, node: SlapClient) -> None:
    node.load_computer_configuration(small_computer(COMP, 2))
    node.supply(SR)
    node.request(SR, "web")
    node.software_release_error(SR, "compilation failed")
    status = marshal.loads(
        get(master, "getSoftwareInstallationStatus", computer_id=COMP, url=SR).content
    )
    assert status["text"] == f"#error while installing {SR}"
    node.computer()
    status = marshal.loads(get(master, "getComputerStatus", computer_id=COMP).content)
    assert status["text"] == f"#access {COMP}"
    partition_status = get(
        master, "getComputerPartitionStatus", computer_id=COMP, computer_partition_id="slappart0"
    )
    assert marshal.loads(partition_status.content)["no_data"] == 1
    assert node.partition_certificate("slappart0") == ("", "")
    with pytest.raises(NotFoundError):
        node.partition_certificate("slappart1")  # free
    ips = get(
        master, "getHostingSubscriptionIpList", computer_id=COMP, computer_partition_id="slappart0"
    )
    assert marshal.loads(ips.content) == [("slaptap0", "10.0.1.1")]
    node.update_related_instances("slappart0", ["a", "b"])
    node.bang("slappart0", "service died")
    node.rename("slappart0", "website")
    node.computer_bang("Reboot")
    node.instance_error("slappart0", "Traceback: boom")
    assert partition(node.computer(), "slappart0").instance_title == "website"
    with pytest.raises(HTTPStatusError) as refused:
        node.use_computer("<journal><transaction/></journal>")
    assert refused.value.status == 400


def test_concurrent_writers_lose_nothing(master: MasterServer, node: SlapClient) -> None:
    count = 20
    node.load_computer_configuration(small_computer(COMP, 2 * count))
    node.supply(SR)
    for i in range(count):
        node.request(SR, f"root-{i}")
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def instance(i: int) -> None:
        try:
            with SlapClient(master.url, COMP) as client:
                barrier.wait()
                pid = f"slappart{i}"
                client.set_connection(pid, {"index": i})
                client.started(pid)
                client.request(SR, f"child-{i}", requester=pid)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=instance, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    computer = node.computer()
    roots = [partition(computer, f"slappart{i}") for i in range(count)]
    assert [p.connection for p in roots] == [{"index": str(i)} for i in range(count)]
    assert all(p.access_status == "#access Instance correctly started" for p in roots)
    children = [p for p in computer.partitions if (p.instance_title or "").startswith("child-")]
    assert len(children) == count and len({p.partition_id for p in children}) == count


def test_ipv6_loopback(tmp_path: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    store = MasterStore(tmp_path / "v6.db", default_computer=COMP)
    try:
        server = MasterServer(store, host="::1", insecure=True)
    except Exception as exc:  # IPv6 compiled in but not configured
        store.close()
        pytest.skip(f"cannot listen on ::1: {exc}")
    with server, SlapClient(server.url, COMP) as client:
        assert server.url.startswith("http://[::1]:")
        assert client.computer().computer_id == COMP
    store.close()


def test_instance_trees_over_json(master: MasterServer, node: SlapClient) -> None:
    """The jIO calls `slapgrid show` makes: JSON in, JSON out, errors as statuses."""
    node.load_computer_configuration(small_computer(COMP, 2))
    node.request(SR, "web", parameters={"port": "80"})
    [listed] = node.instance_trees()
    assert listed == node.instance_tree("web")
    assert (listed["title"], listed["parameters"]) == ("web", {"port": "80"})
    with pytest.raises(NotFoundError, match="no instance tree 'nope'"):
        node.instance_tree("nope")
    url = master.url + "slapos.get.v0.instance_tree"
    for body in (b"[1]", b"{not json", b'{"title": 3}'):
        answer = httpx.post(url, content=body, headers={"Content-Type": "application/json"})
        assert answer.status_code == 400, body
    assert httpx.get(url).status_code == 405
    # the HATEOAS subset the reference client navigates (`slapos service list`)
    root = httpx.get(master.url + "getHateoasUrl").text
    assert root == master.url + "hateoas"
    links = httpx.get(root).json()["_links"]
    search = links["raw_search"]["href"].split("?")[0]
    query = 'portal_type:"Instance Tree" AND validation_state:validated AND title:="web"'
    rows = httpx.get(search, params={"mode": "search", "query": query}).json()
    [row] = rows["_embedded"]["contents"]
    assert (row["title"], row["url_string"]) == ("web", SR)
    view = httpx.get(search, params={"mode": "traverse", "relative_url": row["relative_url"]})
    assert view.json()["_embedded"]["_view"]["my_reference"]["default"] == "web"


def threads_in_the_store() -> int:
    """Threads of this process in a call of the master's store (here: writes waiting)."""
    return sum(1 for frame in sys._current_frames().values() if _in_the_store(frame))


def _in_the_store(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.endswith("master/storage.py"):
            return True
        frame = frame.f_back
    return False


def test_a_brief_write_runs_on_the_event_loop_of_a_master_owning_its_database(
    tmp_path: Path,
) -> None:
    """A user's request in a thread would take the GIL back from the busy loop at each of
    its statements; on SQLite it runs on the loop (and, below, in a thread when another
    process holds the database)."""
    with served(tmp_path, COMP) as master:
        committed_in: list[threading.Thread] = []
        master.store.add_listener(lambda _changed: committed_in.append(threading.current_thread()))
        supplied = post(master, "supplySupply", url=SR, computer_id=COMP, state="available")
        assert supplied.status_code == 200
        assert committed_in == [master.thread]


def test_a_queue_of_writes_leaves_threads_for_the_nodes_reads(tmp_path: Path) -> None:
    """Users' requests faster than the database takes them wait on the event loop, not in
    the threads a node's registerComputerPartition (a read) needs."""
    with served(tmp_path, COMP) as master, SlapClient(master.url, COMP) as node:
        node.load_computer_configuration(small_computer(COMP, 2))
        blocker = sqlite3.connect(tmp_path / "master.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the database
        with ThreadPoolExecutor(max_workers=50) as pool:
            try:
                writes = [
                    pool.submit(
                        httpx.post,
                        master.url + "supplySupply",
                        timeout=60,
                        data={"url": f"{SR}?{i}", "computer_id": COMP, "state": "available"},
                    )
                    for i in range(50)
                ]
                wait_for(lambda: threads_in_the_store() >= WRITERS, what="writes to wait")
                read = get(
                    master,
                    "registerComputerPartition",
                    computer_reference=COMP,
                    computer_partition_reference="slappart0",
                )
                assert read.status_code == 200 and not any(w.done() for w in writes)
                assert threads_in_the_store() <= WRITERS
            finally:
                blocker.execute("ROLLBACK")
            assert [w.result().status_code for w in writes] == [200] * 50
        assert len(node.computer().software_releases) == 50
