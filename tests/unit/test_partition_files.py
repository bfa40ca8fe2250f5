"""Partition profile rendering, hostile master values, run state and locks."""

from __future__ import annotations

import configparser
import multiprocessing
import os
from pathlib import Path

import pytest

from slapgrid.errors import LockedError
from slapgrid.node import layout, lock, safety
from slapgrid.node.config import NodeConfig
from slapgrid.node.files import rotate
from slapgrid.node.instance.partition import observe_partition, render_buildout
from slapgrid.node.state import StateStore
from slapgrid.slap.documents import ComputerPartition, SoftwareRelease
from support.configs import node_config

SR = "https://example.com/sr/software.cfg"


@pytest.fixture
def config(tmp_path: Path) -> NodeConfig:
    return node_config(
        tmp_path,
        master_url="http://127.0.0.1:5000/",
        computer_id="COMP-1",
        shared_part_list=("/opt/shared/a", "/opt/shared/b"),
    )


def partition(pid: str = "slappart0", url: str = SR, state: str = "started") -> ComputerPartition:
    return ComputerPartition("COMP-1", pid, state, SoftwareRelease(url, "COMP-1"), {}, {}, "G")


def test_rendered_profile_parses_and_describes_the_partition(config: NodeConfig) -> None:
    text = render_buildout(
        config,
        partition(),
        "[buildout]\nparts = hello\n",
        key_file=Path("/c/slappart0.key"),
        cert_file=None,
    )
    parser = configparser.RawConfigParser(strict=False)  # buildout merges repeated sections
    parser.read_string(text)
    assert parser.get("buildout", "parts") == "hello"
    assert parser.get("buildout", "offline") == "true"
    assert dict(parser.items("slap-connection")) == {
        "computer-id": "COMP-1",
        "partition-id": "slappart0",
        "server-url": "http://127.0.0.1:5000/",
        "software-release-url": SR,
        "key-file": "/c/slappart0.key",
        "cert-file": "",
        "shared-part-list": "\n/opt/shared/a\n/opt/shared/b",
        "build-time-part-list": "",
        "requested-state": "started",
    }
    assert parser.get("slap_connection", "partition_id") == "slappart0"


@pytest.mark.parametrize(
    "pid", ["../../etc", "..", ".hidden", "a/b", "", "x" * 200, "slap\npart", "a\x00"]
)
def test_hostile_partition_ids_are_refused(config: NodeConfig, pid: str) -> None:
    with pytest.raises(safety.UnsafeValueError, match="refusing partition id"):
        layout.partition(config.instance_root, pid)


@pytest.mark.parametrize(
    "url",
    [
        "https://x/software.cfg; rm -rf /",
        "https://x/$(id)/software.cfg",
        "https://x/`id`",
        "https://x/a b",
        "https://x/\nsoftware.cfg",
        "",
    ],
)
def test_hostile_software_urls_are_refused(config: NodeConfig, url: str) -> None:
    with pytest.raises(safety.UnsafeValueError, match="refusing software release URL"):
        render_buildout(config, partition(url=url), "", key_file=None, cert_file=None)


def test_newlines_and_substitutions_cannot_inject_buildout(config: NodeConfig) -> None:
    hostile = ComputerPartition(
        "COMP-1\n[buildout]\nparts = evil", "slappart0", "started", SoftwareRelease(SR, "C")
    )
    with pytest.raises(safety.UnsafeValueError, match="line break"):
        render_buildout(config, hostile, "", key_file=None, cert_file=None)
    sneaky = ComputerPartition(
        "${buildout:directory}", "slappart0", "started", SoftwareRelease(SR, "C")
    )
    text = render_buildout(config, sneaky, "", key_file=None, cert_file=None)
    assert "computer-id = $${buildout:directory}" in text


def test_symlinked_partition_leading_outside_is_refused(config: NodeConfig, tmp_path: Path) -> None:
    (config.instance_root / "slappart0").symlink_to(tmp_path)
    with pytest.raises(safety.UnsafeValueError, match="leads outside"):
        layout.partition(config.instance_root, "slappart0")


def test_observation_reads_timestamp_and_software(config: NodeConfig) -> None:
    root = config.instance_root / "slappart0"
    root.mkdir(mode=0o750)
    assert observe_partition(config, partition()).deployed_timestamp is None
    (root / ".timestamp").write_text("17")
    software = config.software_root / safety.software_hash(SR)
    software.mkdir()
    (software / ".completed").write_text("done")
    (software / "periodicity").write_text("60\n")
    seen = observe_partition(config, partition())
    assert (seen.deployed_timestamp, seen.software_built, seen.periodicity) == ("17", True, 60)
    free = ComputerPartition("COMP-1", "slappart0")
    assert observe_partition(config, free).leftovers


def test_state_store_counts_attempts_per_timestamp(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.record_failure("p0", "boom", "1")
    second = store.record_failure("p0", "boom again", "1")
    assert second.attempts == 2
    assert StateStore(tmp_path).failures()["p0"].attempts == 2  # survives restarts
    assert store.record_failure("p0", "new params", "2").attempts == 1
    store.clear_failure("p0")
    assert StateStore(tmp_path).failures() == {}


def test_corrupt_state_file_is_an_empty_state(tmp_path: Path) -> None:
    (tmp_path / ".slapgrid").mkdir()
    (tmp_path / ".slapgrid" / "state.json").write_text("{not json")
    assert StateStore(tmp_path).failures() == {}


def _try_lock(path: str, queue: multiprocessing.Queue) -> None:
    try:
        with lock.hold(Path(path), "instance"):
            queue.put("got it")
    except LockedError as exc:
        queue.put(str(exc))


def test_second_run_is_refused_while_the_first_holds_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "instance.lock"
    queue: multiprocessing.Queue = multiprocessing.Queue()
    with lock.hold(path, "instance"):
        process = multiprocessing.Process(target=_try_lock, args=(str(path), queue))
        process.start()
        process.join(10)
        message = queue.get(timeout=5)
    assert message.startswith("another slapgrid instance run is in progress")
    assert f"(pid {os.getpid()})" in message
    with lock.hold(path, "instance"):  # released: free again
        pass


def test_rotate_shifts_backups_and_drops_the_oldest(tmp_path: Path) -> None:
    log = tmp_path / "instance.log"
    assert not rotate(log, 10, 2)  # nothing to rotate yet
    for run in "abcd":
        log.write_text(run * 10)
        assert rotate(log, 10, 2)
        assert not log.exists()
    log.write_text("e" * 9)
    assert not rotate(log, 10, 2)  # under the limit: kept
    backups = sorted(p.name for p in tmp_path.iterdir())
    assert backups == ["instance.log", "instance.log.1", "instance.log.2"]
    assert [(tmp_path / f"instance.log.{n}").read_text()[0] for n in (1, 2)] == ["d", "c"]


def test_rotate_moves_a_planted_symlink_without_following_it(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("keep")
    log = tmp_path / "log" / "instance.log"
    log.parent.mkdir()
    (log.parent / "instance.log.1").symlink_to(target)
    log.write_text("x" * 20)
    assert rotate(log, 10, 3)
    assert (log.parent / "instance.log.2").is_symlink()
    assert target.read_text() == "keep"
