"""The networkcache's files: names checked, entries checked, writes whole or not at all."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from slapgrid.cli.master_cmds import master_settings
from slapgrid.master.cache.store import CacheStore, check_entry, check_key, check_sha512
from slapgrid.master.errors import BadRequest, NotFound, TooLarge

ENTRY = json.dumps({"sha512": "0" * 128})


@pytest.mark.parametrize("key", ["file-urlmd5:0123abcd", "slapos-buildout-x:1.0", "é", "a.b"])
def test_a_plain_key_is_kept(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize(
    "key", ["", ".", "..", "a..b", ".hidden", "a/b", "a\\b", "a b", "a\x00", "a\n", "x" * 201]
)
def test_a_key_that_is_no_plain_file_name_is_refused(key: str) -> None:
    with pytest.raises(BadRequest):
        check_key(key)


def test_a_sha512_is_lowercase_hex() -> None:
    assert check_sha512("a" * 128)
    for name in ("A" * 128, "a" * 129, "g" * 128, "../" + "a" * 125):
        with pytest.raises(BadRequest):
            check_sha512(name)


def test_an_entry_is_a_json_object_and_a_signature() -> None:
    assert check_entry(json.dumps([ENTRY, ""]).encode()) == [ENTRY, ""]
    for body in (b"", b"[1, 2]", json.dumps(["[]", ""]).encode(), json.dumps([ENTRY]).encode()):
        with pytest.raises(BadRequest):
            check_entry(body)


def test_an_upload_lands_whole_under_its_sha512_or_not_at_all(tmp_path: Path) -> None:
    cache = CacheStore(tmp_path / "cache", max_upload_bytes=10)
    with cache.receiving() as upload:
        upload.write(b"12345")
        assert upload.commit() == hashlib.sha512(b"12345").hexdigest()
    assert cache.file(hashlib.sha512(b"12345").hexdigest()).read_bytes() == b"12345"
    with pytest.raises(TooLarge), cache.receiving() as upload:
        upload.write(b"123456")
        upload.write(b"123456")
    with pytest.raises(BadRequest), cache.receiving() as upload:
        upload.write(b"abc")
        upload.commit(expected="0" * 128)
    assert list(cache.tmp.iterdir()) == []
    assert len(list(cache.shacache.iterdir())) == 1
    with pytest.raises(NotFound):
        cache.file("0" * 128)


def test_concurrent_writers_of_a_key_lose_no_entry(tmp_path: Path) -> None:
    caches = [CacheStore(tmp_path / "cache") for _ in range(2)]  # two masters, one directory
    pairs = [[json.dumps({"sha512": f"{i:0128x}"}), f"s{i}"] for i in range(40)]
    threads = [
        threading.Thread(target=caches[i % 2].add_entry, args=("k", json.dumps(pair).encode()))
        for i, pair in enumerate(pairs)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(json.loads(caches[0].entries("k"))) == sorted(pairs)
    caches[1].add_entry("k", json.dumps(pairs[0]).encode())  # again: kept once
    assert len(json.loads(caches[1].entries("k"))) == 40


def test_the_cache_is_beside_the_database_unless_configured(tmp_path: Path) -> None:
    settings = master_settings(None, database=str(tmp_path / "m.db"))
    assert settings["cache_dir"] == str(tmp_path / "cache")
    config = tmp_path / "proxy.cfg"
    config.write_text(f"[slapproxy]\ncache_dir = {tmp_path / 'elsewhere'}\n")
    assert master_settings(str(config))["cache_dir"] == str(tmp_path / "elsewhere")
    assert master_settings(str(config), cache_dir="/srv/c")["cache_dir"] == "/srv/c"
