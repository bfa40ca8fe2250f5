"""A master cannot turn `slapgrid report` against the agent's own files: only partitions
`slapgrid format` made are wiped; `etc`, `var`, `.slapgrid` and any other directory are
refused, reported to the master, and left exactly as they were (checked on the disk)."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest

from slapgrid.cli.main import main
from slapgrid.master.server import MasterServer
from slapgrid.master.storage import InstanceRequest, MasterStore
from slapgrid.node import layout
from slapgrid.node.format.run import run_format
from slapgrid.node.lock import hold
from slapgrid.node.state import StateStore
from slapgrid.node.supervisor.control import Supervisor
from slapgrid.slap import names as slap_names
from slapgrid.slap.client import SlapClient
from support.waiting import wait_for

pytestmark = pytest.mark.integration

COMPUTER = "COMP-DESTROY"
SR = "http://example.invalid/software.cfg"
REAL = "slappart0"
NO_MARKER = f"not a partition: no {layout.RESOURCE_FILE}"
HOSTILE = {
    "etc": "refusing partition id 'etc'",
    "var": "refusing partition id 'var'",
    ".slapgrid": "refusing partition id '.slapgrid'",
    "not-formatted": NO_MARKER,
    "linked": "is a symbolic link",
}
"""The agent's own folders, a directory format did not make, a symlink to a partition; why
each is refused."""
PENDING = Path("var", "xml_report", "slappart1", "pending.xml")
CONSUMPTION = (
    "<consumption><movement><resource>Backup</resource><reference>slappart1</reference>"
    "<quantity>2</quantity><price>0.00</price><VAT>None</VAT></movement></consumption>"
)


def disk_state(root: Path, skip: Path) -> dict[str, tuple[int, int, str]]:
    """Every path under `root` but `skip`: type and mode, owner, content or link target.

    supervisord's logs grow on their own: `logs` checks what they held is kept.
    """
    state = {}
    for path in sorted(root.rglob("*")):
        if path == skip or skip in path.parents:
            continue
        info = path.lstat()
        if path.is_symlink():
            content = f"-> {os.readlink(path)}"
        elif path.parent == root / "var" / "log":
            content = "log"
        elif path.is_file():
            content = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            content = ""
        state[str(path.relative_to(root))] = (info.st_mode, info.st_uid, content)
    return state


def logs(root: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in (root / "var" / "log").iterdir()}


@dataclass
class Site:
    store: MasterStore
    server: MasterServer
    instance_root: Path
    supervisor: Supervisor
    flags: list[str]

    def slapgrid(self, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
        """`slapgrid ARGV` as typed: exit status, output, error output."""
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        try:
            with pytest.raises(SystemExit) as exited:
                main([*argv, *self.flags])
        finally:  # main() configures logging: give the master thread its handlers back
            root.handlers[:], root.level = handlers, level
        out, err = capsys.readouterr()
        return int(exited.value.code or 0), out, err


@pytest.fixture
def site() -> Iterator[Site]:
    """Formatted partitions, supervisord running a service of `slappart0`, and a master
    where every partition above is allocated, then destroyed."""
    root = Path(tempfile.mkdtemp(prefix="ds", dir="/tmp"))  # unix socket paths are short
    store = MasterStore(root / "master.db")
    instance_root, software_root = root / "instance", root / "software"
    instance_root.mkdir()
    software_root.mkdir()
    supervisor = Supervisor(instance_root)
    try:
        with MasterServer(store, insecure=True) as server:
            options = {
                "master_url": server.url,
                "computer_id": COMPUTER,
                "instance_root": str(instance_root),
                "software_root": str(software_root),
                "partition_amount": 2,
                "alter_user": False,
            }
            assert run_format(None, options) == 0
            names = [REAL, *HOSTILE]  # slappart1 stays on disk, unknown to the master
            # a hostile master: ours refuses these names, so let it take them this once
            with mock.patch.object(slap_names, "partition_reference", str):
                store.load_computer_configuration(
                    {"reference": COMPUTER, "partition_list": [{"reference": n} for n in names]}
                )
            store.supply(COMPUTER, SR)
            where = {"computer_guid": COMPUTER}
            for name in names:
                store.request(InstanceRequest(SR, f"title {name}", filter=where))
            assert {p.partition_id for p in SlapClient(server.url, COMPUTER).computer().partitions
                    if not p.is_free} == set(names)  # fmt: skip
            for name in names:
                store.request(InstanceRequest(SR, f"title {name}", filter=where, state="destroyed"))

            not_formatted = instance_root / "not-formatted"
            not_formatted.mkdir(mode=0o750)
            (not_formatted / "data").write_text("not a partition's")
            (instance_root / "linked").symlink_to(instance_root / "slappart1")
            (instance_root / "slappart1" / "data").write_text("slappart1's own")
            (instance_root / PENDING).parent.mkdir(parents=True)
            (instance_root / PENDING).write_text(CONSUMPTION)

            partition = instance_root / REAL
            service = partition / "etc" / "service" / "sleeper"
            service.parent.mkdir(parents=True)
            service.write_text("#!/bin/sh\nexec sleep 60\n")
            service.chmod(0o755)
            supervisor.ensure_config(server.url, COMPUTER)
            supervisor.write_partition(REAL, partition)
            supervisor.ensure_running()
            supervisor.reload()
            supervisor.start_partition(REAL)
            with hold(layout.partitions_lock(instance_root), "test"):
                pass  # the lock file exists before the disk is compared
            flags = [f"--master-url={server.url}", f"--computer-id={COMPUTER}"]
            flags += [f"--instance-root={instance_root}", f"--software-root={software_root}"]
            yield Site(store, server, instance_root, supervisor, flags)
    finally:
        supervisor.shutdown()
        store.close()
        shutil.rmtree(root, ignore_errors=True)


def test_only_partitions_made_by_format_are_destroyed(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    root = site.instance_root
    before = disk_state(root, skip=root / REAL)
    logs_before = logs(root)
    (service,) = [p for p in site.supervisor.process_info(REAL) if p.pid]

    status, plan, _ = site.slapgrid(capsys, "report", "--dry-run")
    assert status == 0
    for pid in HOSTILE:
        assert any(pid in line and "refusing to destroy" in line for line in plan.splitlines())
    assert disk_state(root, skip=root / REAL) == before

    status, _, errors = site.slapgrid(capsys, "report")

    assert status == 1
    refused = [line for line in errors.splitlines() if "refusing to destroy" in line]
    assert len(refused) == len(HOSTILE)
    for pid, reason in HOSTILE.items():
        (line,) = [line for line in refused if f"{pid}: refusing to destroy" in line]
        assert reason in line
    assert "Traceback" not in errors
    # the real partition: service stopped, emptied but for format's marker, reported destroyed
    assert os.listdir(root / REAL) == [layout.RESOURCE_FILE]
    wait_for(lambda: not os.path.exists(f"/proc/{service.pid}"), what="the service to end")
    with SlapClient(site.server.url, COMPUTER) as client:
        left = {p.partition_id for p in client.computer().partitions if not p.is_free}
    assert left == set(HOSTILE)
    for pid, reason in HOSTILE.items():
        text = site.store.partition_status(COMPUTER, pid)["text"]
        assert text.startswith("#error") and reason in text
    # nothing else changed: supervisord's config, pid file, socket, logs; usage; agent files
    after = disk_state(root, skip=root / REAL)
    state = str(layout.state_file(root).relative_to(root))
    changed = {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}
    assert changed == {f"etc/supervisord.conf.d/{REAL}.conf", state}, changed
    logs_after = logs(root)
    assert all(logs_after[name].startswith(kept) for name, kept in logs_before.items())
    assert (root / PENDING).read_text() == CONSUMPTION
    assert site.supervisor.is_running()
    run = StateStore(root).runs()["report"]
    assert (run["destroyed"], sorted(run["failed"])) == ([REAL], sorted(HOSTILE))
