"""The master's networkcache over HTTP(S): shacache and shadir as slapos.libnetworkcache
calls them, who may upload and download, and uploads streamed to disk, bounded, checked.

(The reference client itself is driven against it in tests/interop/test_networkcache.py.)
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from master_site import small_computer
from slapgrid.master.cache import endpoints as cache_endpoints
from slapgrid.master.cache.store import CacheStore
from slapgrid.master.pki.authority import Authority
from slapgrid.master.pki.identity import Identity
from slapgrid.master.server import MasterServer
from slapgrid.master.storage import InstanceRequest, MasterStore
from support.tls import https_client

pytestmark = pytest.mark.integration

COMP = "COMP-CACHE"
SR = "https://example.com/software/cache/software.cfg"
ENTRY = json.dumps({"sha512": "0" * 128, "url": "https://example.com/a.tar.gz"})


def sha512(data: bytes) -> str:
    return hashlib.sha512(data).hexdigest()


@dataclass
class Site:
    server: MasterServer
    cache: CacheStore
    clients: dict[str, httpx.Client]

    def stored(self) -> dict[str, list[str]]:
        """What the cache holds on disk, by directory."""
        return {
            name: sorted(p.name for p in (self.cache.directory / name).iterdir())
            for name in ("shacache", "shadir", "tmp")
        }


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    directory = tmp_path_factory.mktemp("cache")
    authority = Authority.open(directory / "pki")
    store = MasterStore(directory / "master.db", default_computer=COMP)
    store.load_computer_configuration(small_computer(COMP, 2))
    store.supply(COMP, SR)
    store.request(InstanceRequest(SR, "root", owner="alice"))  # slappart0 holds it
    identities = {
        "computer": Identity.for_computer(COMP),
        "partition": Identity.for_partition(COMP, "slappart0"),
        "user": Identity.for_user("alice"),
        "anonymous": None,
    }
    with MasterServer(store, authority=authority, max_upload_bytes=256 << 20) as server:
        assert server.cache is not None
        assert server.cache.directory == directory / "cache"  # beside the database
        clients = {
            name: https_client(server.url, authority, identity, store=store)
            for name, identity in identities.items()
        }
        try:
            yield Site(server, server.cache, clients)
        finally:
            for client in clients.values():
                client.close()
    store.close()


def upload(client: httpx.Client, data: bytes) -> httpx.Response:
    return client.post(
        "shacache", content=data, headers={"Content-Type": "application/octet-stream"}
    )


# --- shacache ------------------------------------------------------------------------------


@pytest.mark.parametrize("uploader", ["computer", "user"])
def test_an_upload_is_answered_with_its_sha512_and_downloaded_by_every_certificate(
    site: Site, uploader: str
) -> None:
    data = f"release archive of {uploader}".encode() * 1000
    answer = upload(site.clients[uploader], data)
    assert (answer.status_code, answer.text) == (201, sha512(data))
    assert (site.cache.shacache / sha512(data)).read_bytes() == data
    for caller in ("computer", "partition", "user"):
        got = site.clients[caller].get(f"shacache/{sha512(data)}")
        assert got.status_code == 200, got.text
        assert got.content == data
        assert got.headers["accept-ranges"] == "bytes"
    assert site.stored()["tmp"] == []


def test_a_download_resumes_with_a_range(site: Site) -> None:
    data = bytes(range(256)) * 64
    assert upload(site.clients["computer"], data).status_code == 201
    got = site.clients["computer"].get(f"shacache/{sha512(data)}", headers={"Range": "bytes=100-"})
    assert got.status_code == 206
    assert got.content == data[100:]


def test_a_missing_file_is_404_and_a_malformed_name_400(site: Site) -> None:
    client = site.clients["computer"]
    assert client.get(f"shacache/{'a' * 128}").status_code == 404
    for name in ("A" * 128, "a" * 127, "..", "x" * 128):
        assert client.get(f"shacache/{name}").status_code in (400, 404), name


def test_an_upload_naming_another_sha512_is_refused(site: Site) -> None:
    before = site.stored()
    data = b"content that is not what the name says"
    wrong = sha512(b"something else")
    answer = site.clients["computer"].put(f"shacache/{wrong}", content=data)
    assert answer.status_code == 400
    assert sha512(data) in answer.text
    assert site.stored() == before  # nothing kept, no temporary file left
    right = site.clients["computer"].put(f"shacache/{sha512(data)}", content=data)
    assert (right.status_code, right.text) == (201, sha512(data))


@pytest.mark.parametrize("caller", ["partition", "anonymous"])
def test_a_partition_or_no_certificate_uploads_nothing(site: Site, caller: str) -> None:
    before = site.stored()
    data = f"upload by {caller}".encode()
    assert upload(site.clients[caller], data).status_code == 403
    body = json.dumps([ENTRY, ""])
    assert site.clients[caller].put("shadir/refused-key", content=body).status_code == 403
    assert site.stored() == before


def test_no_certificate_downloads_nothing(site: Site) -> None:
    data = b"for certificates only"
    assert upload(site.clients["computer"], data).status_code == 201
    assert site.clients["anonymous"].get(f"shacache/{sha512(data)}").status_code == 403
    assert site.clients["computer"].put("shadir/private", content=json.dumps([ENTRY, ""]))
    assert site.clients["anonymous"].get("shadir/private").status_code == 403


def test_concurrent_uploads_of_one_file_all_succeed(site: Site) -> None:
    data = b"the same archive, uploaded by every node at once\n" * 100_000  # 4.9 MB
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: upload(site.clients["computer"], data), range(8)))
    assert {(a.status_code, a.text) for a in answers} == {(201, sha512(data))}
    assert (site.cache.shacache / sha512(data)).read_bytes() == data
    assert site.stored()["tmp"] == []


def test_a_100_MB_upload_is_streamed_to_disk_not_held_in_memory(site: Site) -> None:
    """The master runs in this process: what Python allocates while 100 MB go through it
    stays a few MB (chunks of the stream, one write buffer), and it is quick."""
    block = hashlib.sha512(b"seed").digest() * 16384  # 1 MiB
    count = 100
    expected = hashlib.sha512()
    for _ in range(count):
        expected.update(block)

    def body() -> Iterator[bytes]:
        for _ in range(count):
            yield block

    tracemalloc.start()
    try:
        started = time.monotonic()
        answer = site.clients["user"].post(
            "shacache", content=body(), headers={"Content-Length": str(count * len(block))}
        )
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (answer.status_code, answer.text) == (201, expected.hexdigest())
    assert (site.cache.shacache / expected.hexdigest()).stat().st_size == count * len(block)
    assert peak < 24 << 20, f"{peak / 2**20:.1f} MiB allocated at the peak"
    assert elapsed < 60, elapsed


def test_an_upload_beyond_the_bound_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    store = MasterStore(tmp_path / "master.db", default_computer=COMP)
    with MasterServer(store, insecure=True, max_upload_bytes=1 << 20) as server:
        assert server.cache is not None
        with httpx.Client(base_url=server.url, timeout=30) as client:
            declared = client.post("shacache", content=b"x" * (2 << 20))
            assert declared.status_code == 413

            def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it comes
                for _ in range(4):
                    yield b"y" * (512 << 10)

            streamed = client.post("shacache", content=chunked())
            assert streamed.status_code == 413
            assert upload(client, b"z" * (1 << 20)).status_code == 201  # the bound itself
        assert [p.name for p in server.cache.tmp.iterdir()] == []
        assert len(list(server.cache.shacache.iterdir())) == 1
    store.close()


def test_an_insecure_master_trusts_every_caller_as_the_rest_of_its_api(tmp_path: Path) -> None:
    store = MasterStore(tmp_path / "master.db", default_computer=COMP)
    with (
        MasterServer(store, insecure=True) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        assert upload(client, b"local").text == sha512(b"local")
        assert client.get(f"shacache/{sha512(b'local')}").content == b"local"
        assert client.put("shadir/k", content=json.dumps([ENTRY, "s"])).status_code == 201
        assert client.get("shadir/k").json() == [[ENTRY, "s"]]
    store.close()


def test_a_master_without_a_cache_answers_404(tmp_path: Path) -> None:
    """A MasterServer over a database that is no file has no cache (none is guessed)."""
    store = MasterStore(tmp_path / "master.db", default_computer=COMP)
    with MasterServer(store, insecure=True) as server:
        server.state.cache = None  # as over a PostgreSQL URL
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert upload(client, b"nowhere").status_code == 404
            assert client.get("shadir/k").status_code == 404
            assert client.get(f"shacache/{'a' * 128}").status_code == 404
    store.close()


# --- shadir --------------------------------------------------------------------------------


def test_an_entry_is_listed_under_its_key_once(site: Site) -> None:
    client = site.clients["computer"]
    key = "file-urlmd5:" + hashlib.md5(b"https://example.com/a.tar.gz").hexdigest()
    assert client.get(f"shadir/{key}").status_code == 404  # libnetworkcache: not cached yet
    other = json.dumps({"sha512": "1" * 128})
    for pair in ([ENTRY, "sig-1"], [other, "sig-2"], [ENTRY, "sig-1"]):  # the last again
        answer = client.put(f"shadir/{key}", content=json.dumps(pair))
        assert answer.status_code == 201, answer.text
    got = site.clients["partition"].get(f"shadir/{key}")
    assert got.status_code == 200
    assert got.headers["content-type"] == "application/json"
    assert got.json() == [[ENTRY, "sig-1"], [other, "sig-2"]]


@pytest.mark.parametrize(
    "key", ["a..b", "..x", "...", ".hidden", "with space", "tab%09", "x" * 201, "back\\slash"]
)
def test_a_key_that_is_no_plain_file_name_is_refused(site: Site, key: str) -> None:
    before = site.stored()
    answer = site.clients["computer"].put(f"shadir/{key}", content=json.dumps([ENTRY, ""]))
    assert answer.status_code == 400, answer.text
    assert site.clients["computer"].get(f"shadir/{key}").status_code == 400
    assert site.stored() == before


def test_a_key_with_an_encoded_slash_reaches_no_file(site: Site) -> None:
    before = site.stored()
    for key in ("..%2F..%2Fmaster.db", "%2E%2E", "a%2Fb", "%2e%2e%2fx"):
        answer = site.clients["computer"].put(f"shadir/{key}", content=json.dumps([ENTRY, ""]))
        assert answer.status_code in (400, 404), (key, answer.text)
        assert site.clients["computer"].get(f"shadir/{key}").status_code in (400, 404), key
    assert site.stored() == before


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"{}",
        b"[]",
        json.dumps([ENTRY]).encode(),
        json.dumps([ENTRY, "sig", "more"]).encode(),
        json.dumps([ENTRY, None]).encode(),
        json.dumps([{"sha512": "0"}, "sig"]).encode(),
        json.dumps(["not json", "sig"]).encode(),
        json.dumps(["[1, 2]", "sig"]).encode(),
        b"\xff\xfe",
    ],
)
def test_a_malformed_entry_is_refused(site: Site, body: bytes) -> None:
    before = site.stored()
    answer = site.clients["user"].put("shadir/malformed", content=body)
    assert answer.status_code == 400, answer.text
    assert site.stored() == before


def test_concurrent_entries_under_one_key_are_all_kept(site: Site) -> None:
    pairs = [[json.dumps({"sha512": f"{i:0128x}"}), f"sig-{i}"] for i in range(32)]
    barrier = threading.Barrier(8)

    def put(pair: list[str]) -> int:
        if int(pair[1].split("-")[1]) < 8:
            barrier.wait()
        return site.clients["computer"].put("shadir/crowded", content=json.dumps(pair)).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(put, pairs)) == {201}
    got = site.clients["computer"].get("shadir/crowded").json()
    assert sorted(got) == sorted(pairs)


def test_a_stalled_upload_is_dropped_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_endpoints, "IDLE_TIMEOUT", 0.5)
    store = MasterStore(tmp_path / "master.db", default_computer=COMP)
    with MasterServer(store, insecure=True) as server:
        host, port = httpx.URL(server.url).host, httpx.URL(server.url).port
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(
                b"POST /shacache HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10
            )
            started = time.monotonic()
            answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - started < 5
        assert server.cache is not None
        assert list(server.cache.tmp.iterdir()) == []
        assert list(server.cache.shacache.iterdir()) == []
    store.close()
