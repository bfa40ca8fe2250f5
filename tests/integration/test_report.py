"""`slapgrid report` for real: processes measured with psutil, partitions wiped on disk,
reports POSTed to a real HTTP server (a recording one, and the embedded master)."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from lxml import etree

from nodes import formatted_partition
from recording_server import Answer, RecordingServer
from slapgrid.errors import LockedError
from slapgrid.exit_status import ExitStatus
from slapgrid.master.server import MasterServer
from slapgrid.master.storage import InstanceRequest, MasterStore
from slapgrid.node import layout
from slapgrid.node.config import NodeConfig
from slapgrid.node.lock import hold
from slapgrid.node.planner import Kind
from slapgrid.node.report.measure import (
    PROCESSES,
    ProcessTable,
    dedicated_uid,
    disk_usage,
    measure_partition,
    measure_processes,
)
from slapgrid.node.report.plan import plan_report
from slapgrid.node.report.run import ReportError, run_report
from slapgrid.node.report.wipe import empty_directory
from slapgrid.node.state import StateStore
from slapgrid.node.supervisor.control import Supervisor
from slapgrid.slap import marshal, transport
from slapgrid.slap.client import SlapClient
from slapgrid.slap.documents import Computer, ComputerPartition, SoftwareRelease
from slapgrid.slap.tioxml import computer_schema
from support.configs import node_config
from support.waiting import wait_for

pytestmark = pytest.mark.integration

COMPUTER_ID = "COMP-1"
SR = "http://example.invalid/software.cfg"
REPORTS = (
    "useComputer",
    "stoppedComputerPartition",
    "destroyedComputerPartition",
    "softwareInstanceError",
)


def consumption(resource: str, quantity: str = "1.5", reference: str = "other") -> str:
    return (
        f"<consumption><movement><resource>{resource}</resource><reference>{reference}</reference>"
        f"<quantity>{quantity}</quantity><price>0.00</price><VAT>None</VAT></movement>"
        "</consumption>"
    )


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


# --------------------------------------------------------------------------- measuring


@pytest.fixture
def busy_process() -> Iterator[subprocess.Popen[str]]:
    """A python that used CPU and 32 MiB, with a `sleep` child: a partition's service."""
    code = (
        "import subprocess, time\n"
        "child = subprocess.Popen(['sleep', '60'])\n"
        "memory = b'x' * (32 << 20)\n"
        "start = time.process_time()\n"
        "while time.process_time() - start < 0.3: pass\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
        yield process
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_processes_are_attributed_by_supervised_pid_and_descendants(
    busy_process: subprocess.Popen[str], tmp_path: Path
) -> None:
    processes = ProcessTable.snapshot().partition_processes([busy_process.pid, 0])
    names = {p.pid: p.name() for p in processes}
    assert len(names) == 2 and busy_process.pid in names
    assert [name for pid, name in names.items() if pid != busy_process.pid] == ["sleep"]

    cpu, rss, count = measure_processes(processes)
    assert cpu >= 0.25
    assert rss >= 32 << 20
    assert count == 2

    usage = measure_partition("slappart0", tmp_path, [busy_process.pid])
    assert (usage.process_count, usage.memory_bytes >= 32 << 20) == (2, True)
    assert dedicated_uid(tmp_path) is None  # the agent's own user: no attribution by uid


@pytest.mark.skipif(os.geteuid() != 0, reason="running a process as another user needs root")
def test_processes_of_a_dedicated_partition_user_are_attributed(tmp_path: Path) -> None:
    uid = 65534
    partition = tmp_path / "slappart0"
    partition.mkdir()
    os.chown(partition, uid, uid)
    sleeper = subprocess.Popen(["sleep", "60"], user=uid, group=uid)
    try:
        assert dedicated_uid(partition) == uid
        processes = ProcessTable.snapshot().partition_processes([], uid)
        assert sleeper.pid in {p.pid for p in processes}
        assert measure_partition("slappart0", partition, []).process_count >= 1
    finally:
        sleeper.kill()
        sleeper.wait()


def test_disk_usage_counts_hard_links_once_and_never_follows_symlinks(tmp_path: Path) -> None:
    partition = tmp_path / "slappart0"
    (partition / "a" / "b").mkdir(parents=True)
    (partition / "a" / "b" / "data").write_bytes(os.urandom(1 << 20))
    os.link(partition / "a" / "b" / "data", partition / "hard-link")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big").write_bytes(os.urandom(4 << 20))
    (partition / "dir-link").symlink_to(outside)
    (partition / "a" / "file-link").symlink_to(outside / "big")

    started = time.perf_counter()
    usage = disk_usage(partition)
    assert time.perf_counter() - started < 1
    assert 1 << 20 <= usage < (1 << 20) + (64 << 10)
    assert disk_usage(tmp_path / "missing") == 0


# --------------------------------------------------------------------------- report runs


@dataclass
class Node:
    """An instance root, a certificate repository and a master answering from a table."""

    config: NodeConfig
    server: RecordingServer
    partitions: list[ComputerPartition] = field(default_factory=list)

    def path(self, partition_id: str) -> Path:
        return self.config.instance_root / partition_id

    def add(self, partition_id: str, state: str, *, free: bool = False) -> Path:
        software = None if free else SoftwareRelease(SR, COMPUTER_ID)
        self.partitions.append(ComputerPartition(COMPUTER_ID, partition_id, state, software))
        return formatted_partition(self.path(partition_id))

    def run(self, **kwargs: object) -> ExitStatus:
        document = marshal.dumps(Computer(COMPUTER_ID, self.partitions).to_wire())
        self.server.routes["getFullComputerInformation"] = Answer(200, document)
        self.server.requests.clear()
        with SlapClient(self.server.url, COMPUTER_ID) as client:
            return run_report(self.config, client, **kwargs).status  # type: ignore[arg-type]

    def calls(self) -> list[tuple[str, str | None]]:
        return [
            (r.path.lstrip("/"), r.form.get("computer_partition_id")) for r in self.server.requests
        ]

    def journal(self) -> etree._Element:
        (use,) = [r for r in self.server.requests if r.path == "/useComputer"]
        root = etree.fromstring(use.form["use_string"].encode())
        assert computer_schema().validate(root), computer_schema().error_log
        return root


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    with RecordingServer() as server:
        for method in REPORTS:
            server.routes[method] = Answer(200, b"")
        certificates = tmp_path / "certificates"
        certificates.mkdir()
        config = node_config(
            tmp_path,
            master_url=server.url,
            computer_id=COMPUTER_ID,
            certificate_repository_path=certificates,
        )
        yield Node(config, server)


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


def test_the_plan_shown_is_the_plan_run(node: Node) -> None:
    """`--dry-run` and `slapgrid plan` show `plan_report`, which the run follows."""
    node.add("slappart0", "started")
    node.add("slappart1", "destroyed")
    node.partitions.append(
        ComputerPartition(COMPUTER_ID, "slappart2", "destroyed", SoftwareRelease(SR, COMPUTER_ID))
    )  # no directory here: nothing to destroy
    node.add("slappart3", "destroyed", free=True)
    plan = plan_report(node.config, Computer(COMPUTER_ID, node.partitions))
    assert sorted(plan.busy) == ["slappart0", "slappart1"]
    assert [(a.kind, a.target, a.reason) for a in plan.actions] == [
        (Kind.DESTROY, "slappart1", "requested destroyed")
    ]
    assert node.run() == 0
    destroyed = [target for method, target in node.calls() if method.startswith("destroyed")]
    assert destroyed == [a.target for a in plan.actions]


def test_instance_reports_are_merged_and_consumed_after_acceptance(
    node: Node, tmp_path: Path
) -> None:
    path = node.add("slappart0", "started")
    reports = path / "var" / "xml_report"
    write(
        path / "etc" / "report" / "usage",
        f"#!/bin/sh\nprintf '%s' '{consumption('Script usage', '3')}' > \"$1\"\n",
        0o755,
    )
    write(reports / "good.xml", consumption("Backup size"))
    write(reports / "bad.xml", "<consumption/>")
    write(tmp_path / "outside.xml", consumption("Not mine"))
    (reports / "link.xml").symlink_to(tmp_path / "outside.xml")
    root_reports = node.config.instance_root / "var" / "xml_report"
    write(root_reports / "slappart0" / "from-root.xml", consumption("Collected", "7"))
    write(root_reports / "slappart0" / "broken.xml", "<consumption>")
    ready = (
        '<journal><transaction type="Eco"><start_date/><stop_date/><reference>COMP-1</reference>'
        '<currency/><payment_mode/><arrow type="Administration"/><movement><resource>Eco'
        "</resource><quantity>0.5</quantity><price>0</price><VAT>None</VAT></movement>"
        "</transaction></journal>"
    )
    write(root_reports / COMPUTER_ID / "journal.xml", ready)

    assert node.run() == 0

    journal = node.journal()
    ours, collected = journal.findall("transaction")
    written = {
        m.findtext("resource"): m.findtext("reference")
        for m in ours.iter("movement")
        if m.findtext("resource") in ("Script usage", "Backup size", "Collected", "Not mine")
    }
    assert written == {"Script usage": "slappart0", "Backup size": "slappart0",
                       "Collected": "slappart0"}  # fmt: skip
    assert collected.findtext("movement/resource") == "Eco"
    assert sorted(os.listdir(reports)) == ["bad.xml", "link.xml"]
    assert sorted(os.listdir(root_reports / "slappart0")) == ["broken.xml"]
    assert os.listdir(root_reports / COMPUTER_ID) == []
    assert (tmp_path / "outside.xml").exists()


def test_failed_send_keeps_documents_and_the_partitions_holding_them(node: Node) -> None:
    node.server.routes["useComputer"] = Answer(500, b"database is down")
    path = node.add("slappart0", "started")
    write(path / "var" / "xml_report" / "good.xml", consumption("Backup size"))
    holding = node.add("slappart1", "destroyed")
    write(holding / "var" / "xml_report" / "last.xml", consumption("Final backup"))
    plain = node.add("slappart2", "destroyed")
    write(plain / "data", "nothing unsent here")

    assert node.run() == 1

    assert node.calls()[1:] == [
        ("useComputer", None),
        ("stoppedComputerPartition", "slappart2"),
        ("destroyedComputerPartition", "slappart2"),
    ]
    assert (path / "var" / "xml_report" / "good.xml").exists()
    assert (holding / "var" / "xml_report" / "last.xml").exists()
    assert os.listdir(plain) == [layout.RESOURCE_FILE]
    run = StateStore(node.config.instance_root).runs()["report"]
    assert (run["usage"], run["postponed"], run["destroyed"]) == (
        "failed",
        ["slappart1"],
        ["slappart2"],
    )

    node.server.routes["useComputer"] = Answer(200, b"")
    assert node.run() == 0  # the master is back: the documents go, then the partition
    assert not (path / "var" / "xml_report" / "good.xml").exists()
    assert ("destroyedComputerPartition", "slappart1") in node.calls()
    assert os.listdir(holding) == [layout.RESOURCE_FILE]
    resources = {m.findtext("resource") for m in node.journal().iter("movement")}
    assert {"Backup size", "Final backup"} <= resources


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


def test_master_unreachable_is_one_clear_error(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "CONNECT_BACKOFF", 0.01)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}/"
    with SlapClient(url, COMPUTER_ID) as client, pytest.raises(ReportError) as caught:
        run_report(node.config, client)
    assert str(caught.value).startswith("cannot get the partitions of COMP-1 from the master")
    assert "\n" not in str(caught.value) and caught.value.exit_code == 1


def test_a_running_instance_run_blocks_report(node: Node) -> None:
    with (
        hold(layout.partitions_lock(node.config.instance_root), "instance"),
        pytest.raises(LockedError),
    ):
        node.run()
    assert node.calls() == []


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


def test_report_against_the_embedded_master(tmp_path: Path) -> None:
    store = MasterStore(tmp_path / "master.db")
    partitions = [{"reference": f"slappart{index}"} for index in range(2)]
    store.load_computer_configuration({"reference": COMPUTER_ID, "partition_list": partitions})
    store.supply(COMPUTER_ID, SR)
    where = {"computer_guid": COMPUTER_ID}
    allocated = store.request(InstanceRequest(SR, "web", filter=where))
    partition_id = allocated["slap_computer_partition_id"]
    store.request(InstanceRequest(SR, "web", filter=where, state="destroyed"))
    instance_root = tmp_path / "instance"
    for name in ("slappart0", "slappart1"):
        write(formatted_partition(instance_root / name) / "data", "instance data")

    with MasterServer(store) as master, SlapClient(master.url, COMPUTER_ID) as client:
        config = node_config(tmp_path, master_url=master.url, computer_id=COMPUTER_ID)
        assert run_report(config, client).status == 0
        after = client.computer()

    assert all(partition.is_free for partition in after.partitions)
    assert os.listdir(instance_root / partition_id) == [layout.RESOURCE_FILE]
    (usage,) = store.usage_reports(COMPUTER_ID)
    assert {m.findtext("reference") for m in etree.fromstring(usage.encode()).iter("movement")} == {
        partition_id
    }
    store.close()
