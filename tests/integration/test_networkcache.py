"""The binary cache with a real networkcache on 127.0.0.1 and the real zc.buildout.

Node 1 builds a release (examples/hello plus a part counting its builds) and uploads it;
node 2, from an empty software root at the same path, installs it without building.
Anything wrong with the cache (tampered archive, bad or untrusted signature, truncated
download or archive, cache down) falls back to a build and says why.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import shutil
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from slapgrid.node.config import NodeConfig
from slapgrid.node.safety import software_hash
from slapgrid.node.software.cache.client import Endpoint, NetworkCache
from slapgrid.node.software.run import run_software
from slapgrid.node.state import StateStore
from slapgrid.node.status import collect
from support.networkcache_server import CacheServer, networkcache_server
from support.signing import signer
from support.software_releases import Master, Release, counted_hello, make_config

pytestmark = pytest.mark.integration


def cache_options(server_url: str, key: Path | None, certificates: str) -> dict[str, str]:
    options = {
        "download-binary-cache-url": f"{server_url}/shacache",
        "download-binary-dir-url": f"{server_url}/shadir",
        "signature-certificate-list": certificates,
    }
    if key is not None:
        options |= {
            "upload-binary-cache-url": f"{server_url}/shacache",
            "upload-binary-dir-url": f"{server_url}/shadir",
            "signature-private-key-file": str(key),
        }
    return options


def node(root: Path, options: dict[str, str]) -> NodeConfig:
    return make_config(root, extra=options)


def builds(world: SimpleNamespace) -> int:
    return world.counter.read_text().count("built") if world.counter.exists() else 0


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """Node 1 built and uploaded the release; its software root was then moved away."""
    root = tmp_path_factory.mktemp("cache")
    counter = root / "counter"
    url = root / "counted.cfg"
    url.write_text(counted_hello(counter))
    key, certificate = signer(root, "node1")
    with networkcache_server() as server:
        config = node(root / "node1", cache_options(server.url, key, certificate))
        master = Master(Release(str(url)))
        started = time.monotonic()
        assert run_software(config, master).status == 0, master.errors
        built_in = time.monotonic() - started
        (root / "node1" / "software").rename(root / "node1" / "software-built")
        yield SimpleNamespace(
            root=root,
            url=str(url),
            counter=counter,
            key=key,
            certificate=certificate,
            server=server,
            built_in=built_in,
            first_origin=StateStore(root / "node1" / "software-built").origins()[str(url)],
        )


@pytest.fixture
def cache(world: SimpleNamespace) -> Iterator[CacheServer]:
    """The shared server, put back as node 1 left it after each test."""
    store = world.server.store
    blobs, entries = dict(store.blobs), json.loads(json.dumps(store.entries))
    yield world.server
    store.blobs, store.entries = blobs, entries
    store.serve, store.truncate = (lambda body: body), False


def test_node1_built_and_uploaded_a_signed_entry(world: SimpleNamespace) -> None:
    assert world.first_origin == "built: no cache entry"
    [[text, signature]] = world.server.store.entries[software_hash(world.url)]
    entry = json.loads(text)
    assert set(entry) == {"sha512", "software_url", "software_root", "multiarch", "os"}
    assert entry["software_url"] == world.url and signature
    with tarfile.open(fileobj=io.BytesIO(world.server.store.blobs[entry["sha512"]])) as tar:
        names = tar.getnames()
    top = software_hash(world.url)
    assert f"{top}/bin/buildout" in names and f"{top}/.completed" not in names
    assert not any(name.startswith((f"{top}/.slapgrid", f"{top}/.netrc")) for name in names)
    print(f"\nnode 1: built and uploaded in {world.built_in:.1f} s")


def test_node2_installs_from_the_cache_without_building(
    world: SimpleNamespace, cache: CacheServer
) -> None:
    before = builds(world)
    config = node(world.root / "node1", cache_options(cache.url, None, world.certificate))
    master = Master(Release(world.url))
    started = time.monotonic()
    assert run_software(config, master).status == 0, master.errors
    took = time.monotonic() - started
    assert builds(world) == before  # the release's build part did not run
    software = config.software_root / software_hash(world.url)
    assert (software / ".completed").is_file()
    assert not (software / ".slapgrid" / "build.log").exists()
    assert master.calls == [("building", world.url), ("available", world.url)]
    [status] = collect(config).software
    assert (status.built, status.origin) == (True, "from cache")
    run = StateStore(config.software_root).runs()["software"]
    assert run["actions"][0]["origin"] == "from cache"
    # the release is whole where it was built: the profile, buildout, the linked eggs
    assert (software / "instance.cfg").is_file() and (software / "bin" / "buildout").is_file()
    link = software / "develop-eggs" / "slapos.recipe.build.egg-link"
    target = (link.parent / link.read_text().strip()).resolve()  # relative: in node 2's copy
    assert target.is_dir() and target.is_relative_to(software)
    print(f"\nnode 2: installed from the cache in {took:.1f} s (built in {world.built_in:.1f} s)")
    shutil.rmtree(config.software_root)


def _sign_and_add(world: SimpleNamespace, cache: CacheServer, body: bytes, key: Path) -> None:
    """Upload `body` as the release's archive, signed by `key` (node 1's own entry fields)."""
    [[text, _]] = cache.store.entries[software_hash(world.url)]
    fields = {k: v for k, v in json.loads(text).items() if k != "sha512"}
    client = NetworkCache(
        Endpoint(f"{cache.url}/shacache"),
        Endpoint(f"{cache.url}/shadir"),
        private_key_file=str(key),
        certificates=[world.certificate, Path(f"{key}.pem").read_text()],
    )
    cache.store.entries.clear()
    archive = world.root / "spoiled.tar.gz"
    archive.write_bytes(body)
    client.upload(archive, software_hash(world.url), fields)


def _archive(cache: CacheServer, world: SimpleNamespace) -> bytes:
    [[text, _]] = cache.store.entries[software_hash(world.url)]
    return cache.store.blobs[json.loads(text)["sha512"]]


def _tampered(cache: CacheServer, world: SimpleNamespace) -> str:
    cache.store.serve = lambda body: body[:-100] + b"x" * 100
    return "wrong checksum"


def _truncated_download(cache: CacheServer, world: SimpleNamespace) -> str:
    cache.store.truncate = True
    return "wrong checksum"


def _bad_signature(cache: CacheServer, world: SimpleNamespace) -> str:
    [[text, signature]] = cache.store.entries[software_hash(world.url)]
    entry = json.loads(text) | {"software_url": "http://evil/"}
    cache.store.entries[software_hash(world.url)] = [[json.dumps(entry), signature]]
    return "bad signature"


def _untrusted_signer(cache: CacheServer, world: SimpleNamespace) -> str:
    key, certificate = signer(world.root, "intruder")
    Path(f"{key}.pem").write_text(certificate)
    _sign_and_add(world, cache, _archive(cache, world), key)
    return "bad signature"


def _truncated_archive(cache: CacheServer, world: SimpleNamespace) -> str:
    body = gzip.decompress(_archive(cache, world))
    Path(f"{world.key}.pem").write_text(world.certificate)
    _sign_and_add(world, cache, gzip.compress(body[: len(body) // 2]), world.key)
    return "bad archive"


def _no_entry(cache: CacheServer, world: SimpleNamespace) -> str:
    cache.store.entries.clear()
    return "no cache entry"


@pytest.mark.parametrize(
    "spoil",
    [
        _tampered,
        _truncated_download,
        _bad_signature,
        _untrusted_signer,
        _truncated_archive,
        _no_entry,
    ],
)
def test_a_bad_cache_falls_back_to_a_build_and_says_why(
    world: SimpleNamespace,
    cache: CacheServer,
    tmp_path: Path,
    spoil: object,
    caplog: pytest.LogCaptureFixture,
) -> None:
    reason = spoil(cache, world)  # type: ignore[operator]
    before = builds(world)
    config = node(tmp_path, cache_options(cache.url, None, world.certificate))
    with caplog.at_level(logging.INFO, logger="slapgrid"):
        assert run_software(config, Master(Release(world.url))).status == 0
    assert builds(world) == before + 1
    [line] = [r.getMessage() for r in caplog.records if "building from source" in r.getMessage()]
    assert reason in line
    assert StateStore(config.software_root).origins()[world.url].startswith(f"built: {reason}")
    transfers = config.software_root / ".slapgrid" / "cache"  # nothing left behind
    assert not transfers.exists() or not list(transfers.iterdir())


def test_a_cache_that_is_down_does_not_fail_the_run(
    world: SimpleNamespace, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    options = cache_options("http://127.0.0.1:9", world.key, world.certificate)
    config = node(tmp_path, options)
    with caplog.at_level(logging.INFO, logger="slapgrid"):
        assert run_software(config, Master(Release(world.url))).status == 0
    messages = [record.getMessage() for record in caplog.records]
    assert any("building from source: cache unreachable" in m for m in messages), messages
    assert any("not uploaded to the binary cache" in m for m in messages), messages
