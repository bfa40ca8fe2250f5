"""`slapgrid report` destroying partitions for real: partitions wiped on disk (hostile
trees, retention locks, destroy scripts, racing links), supervised services stopped."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

import pytest

from report_site import (
    COMPUTER_ID,
    Node,
    report_node,  # noqa: F401  (the `node` fixture)
    write,
)
from slapgrid.node import layout
from slapgrid.node.report.measure import PROCESSES
from slapgrid.node.report.wipe import empty_directory
from slapgrid.node.state import StateStore
from slapgrid.node.supervisor.control import Supervisor
from support.configs import node_config
from support.waiting import wait_for

pytestmark = pytest.mark.integration


def hostile_partition(path: Path, outside: Path) -> None:
    """Everything an instance leaves: nested and read-only trees, dot files, links out."""
    write(path / ".timestamp", "123")
    write(path / "srv" / "www" / "index.html", "hello")
    write(path / "var" / "log" / "deep" / "er" / "log.txt", "x" * 10000)
    write(path / "readonly" / "inside" / "file", "locked", 0o400)
    (path / "readonly" / "inside").chmod(0o500)
    (path / "readonly").chmod(0o500)
    (path / "software_release").symlink_to(outside)
    (path / "etc-link").symlink_to(outside)
    (path / "srv" / "passwd-link").symlink_to(outside / "secret")
    (path / "dangling").symlink_to(path / "nowhere")
    os.mkfifo(path / "fifo")


def test_destroyed_partition_is_emptied_kept_and_reported_in_order(
    node: Node, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outside = tmp_path / "outside"
    write(outside / "secret", "do not touch")
    node.add("slappart0", "started")
    write(node.path("slappart0") / "srv" / "data", "kept")
    destroyed = node.add("slappart1", "destroyed")
    hostile_partition(destroyed, outside)
    owner = destroyed.stat().st_uid, destroyed.stat().st_gid
    free = node.add("slappart2", "destroyed", free=True)
    write(free / "leftover", "free partitions are not report's business")
    certificates = node.config.certificate_repository_path
    assert certificates is not None
    for name in ("slappart0.crt", "slappart0.key", "slappart1.crt", "slappart1.key"):
        write(certificates / name, "PEM", 0o400)

    started = time.perf_counter()
    with caplog.at_level(logging.INFO, logger="slapgrid.node.report.run"):
        assert node.run() == 0
    elapsed = time.perf_counter() - started

    assert node.calls() == [
        ("getFullComputerInformation", None),
        ("useComputer", None),
        ("stoppedComputerPartition", "slappart1"),
        ("destroyedComputerPartition", "slappart1"),
    ]
    assert os.listdir(destroyed) == [layout.RESOURCE_FILE]
    info = destroyed.stat()
    assert (stat.S_IMODE(info.st_mode), (info.st_uid, info.st_gid)) == (0o750, owner)
    assert (outside / "secret").read_text() == "do not touch"
    assert sorted(os.listdir(outside)) == ["secret"]
    assert sorted(os.listdir(certificates)) == ["slappart0.crt", "slappart0.key"]
    assert (node.path("slappart0") / "srv" / "data").read_text() == "kept"
    assert (free / "leftover").exists()
    references = {m.findtext("reference") for m in node.journal().iter("movement")}
    assert references == {"slappart0", "slappart1"}
    run = StateStore(node.config.instance_root).runs()["report"]
    assert (run["destroyed"], run["usage"], run["exit_code"]) == (["slappart1"], "sent", 0)
    assert elapsed < 5
    assert caplog.messages[-1] == "report: usage sent (8 movements); destroyed: slappart1"


def test_retention_lock_is_honoured(node: Node) -> None:
    path = node.add("slappart1", "destroyed")
    write(path / ".slapos-retention-lock-delay", "1.0")
    write(path / "data", "retained")

    assert node.run() == 0
    assert ("destroyedComputerPartition", "slappart1") not in node.calls()
    assert ("stoppedComputerPartition", "slappart1") in node.calls()
    assert (path / "data").exists()
    until = float((path / ".slapos-retention-lock-date").read_text())
    assert abs(until - (time.time() + 86400)) < 60

    assert node.run() == 0  # the date is kept, not pushed back
    assert float((path / ".slapos-retention-lock-date").read_text()) == until
    assert (path / "data").exists()

    write(path / ".slapos-retention-lock-date", str(time.time() - 1))
    assert node.run() == 0
    assert ("destroyedComputerPartition", "slappart1") in node.calls()
    assert os.listdir(path) == [layout.RESOURCE_FILE]


def test_failing_destroy_script_keeps_the_partition_and_reports_an_error(
    node: Node, tmp_path: Path
) -> None:
    failing = node.add("slappart1", "destroyed")
    write(failing / "sbin" / "destroy", "#!/bin/sh\necho cannot unmount the volume >&2\nexit 3\n",
          0o755)  # fmt: skip
    write(failing / "data", "kept for the next run")
    marker = tmp_path / "destroy-ran"
    working = node.add("slappart2", "destroyed")
    write(working / "sbin" / "destroy", f"#!/bin/sh\npwd > {marker}\n", 0o755)

    assert node.run() == 1

    assert node.calls()[2:] == [
        ("stoppedComputerPartition", "slappart1"),
        ("softwareInstanceError", "slappart1"),
        ("stoppedComputerPartition", "slappart2"),
        ("destroyedComputerPartition", "slappart2"),
    ]
    error = node.server.requests[3].form["error_log"]
    assert "exit code 3" in error and "cannot unmount the volume" in error
    assert (failing / "data").exists() and (failing / "sbin" / "destroy").exists()
    assert marker.read_text().strip() == str(working)
    assert os.listdir(working) == [layout.RESOURCE_FILE]


def test_empty_directory_unlinks_directories_swapped_for_links(tmp_path: Path) -> None:
    """A directory replaced by a link after it was listed (a racing instance) is unlinked."""
    outside = tmp_path / "outside"
    write(outside / "keep", "x")
    target = tmp_path / "partition"
    for index in range(10):
        write(target / f"d{index}" / "f", "y")
    real_scandir = os.scandir
    swapped = False

    class Listed(list):
        def __enter__(self) -> Listed:
            return self

        def __exit__(self, *exc_info: object) -> None:
            pass

    def stale_scandir(fd: int) -> Listed:
        nonlocal swapped
        listing = Listed(real_scandir(fd))
        if not swapped:
            swapped = True
            for index in range(5, 10):
                os.unlink(target / f"d{index}" / "f")
                os.rmdir(target / f"d{index}")
                (target / f"d{index}").symlink_to(outside)
        return listing

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "scandir", stale_scandir)
        empty_directory(target)
    assert swapped
    assert os.listdir(target) == []
    assert sorted(os.listdir(outside)) == ["keep"]


# --------------------------------------------------------------------------- with real peers


def test_supervised_partition_is_measured_then_stopped_and_destroyed(node: Node) -> None:
    root = Path(tempfile.mkdtemp(prefix="rp", dir="/tmp"))  # unix socket paths are short
    config = node_config(
        root,
        master_url=node.config.master_url,
        computer_id=COMPUTER_ID,
        instance_root=root,
        software_root=node.config.software_root,
    )
    node.config = config
    path = node.add("slappart1", "destroyed")
    write(path / "etc" / "service" / "sleeper", "#!/bin/sh\nexec sleep 60\n", 0o755)
    supervisor = Supervisor(root)
    supervisor.ensure_config(config.master_url, COMPUTER_ID)
    try:
        supervisor.write_partition("slappart1", path)
        supervisor.ensure_running()
        supervisor.reload()
        supervisor.start_partition("slappart1")
        (info,) = wait_for(
            lambda: [i for i in supervisor.process_info("slappart1") if i.pid], what="the service"
        )
        assert node.run(supervisor=supervisor) == 0
        assert not supervisor.partition_conf("slappart1").exists()
        assert supervisor.process_info("slappart1") == []
        wait_for(lambda: not os.path.exists(f"/proc/{info.pid}"), what="the service to end")
        counts = [
            m.findtext("quantity")
            for m in node.journal().iter("movement")
            if m.findtext("resource") == PROCESSES
        ]
        assert counts == ["1"]
        assert os.listdir(path) == [layout.RESOURCE_FILE]
    finally:
        supervisor.shutdown()
        shutil.rmtree(root, ignore_errors=True)
