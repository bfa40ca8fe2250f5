"""`slapgrid report` for real: usage reports POSTed to a real HTTP server (a recording one,
and the embedded master), the plan it follows, failures to reach or lock."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from lxml import etree

from nodes import formatted_partition
from recording_server import Answer
from report_site import (
    COMPUTER_ID,
    SR,
    Node,
    consumption,
    report_node,  # noqa: F401  (the `node` fixture)
    write,
)
from slapgrid.errors import LockedError
from slapgrid.exit_status import ExitStatus
from slapgrid.master.server import MasterServer
from slapgrid.master.storage import InstanceRequest, MasterStore
from slapgrid.node import layout
from slapgrid.node.lock import hold
from slapgrid.node.planner import Kind
from slapgrid.node.report.plan import plan_report
from slapgrid.node.report.run import ReportError, run_report
from slapgrid.node.state import StateStore
from slapgrid.slap import transport
from slapgrid.slap.client import SlapClient
from slapgrid.slap.documents import Computer, ComputerPartition, SoftwareRelease
from support.configs import node_config

pytestmark = pytest.mark.integration


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


def test_master_unreachable_is_one_clear_error(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "CONNECT_BACKOFF", 0.01)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}/"
    with SlapClient(url, COMPUTER_ID) as client, pytest.raises(ReportError) as caught:
        run_report(node.config, client)
    assert str(caught.value).startswith("cannot get the partitions of COMP-1 from the master")
    assert "\n" not in str(caught.value) and caught.value.exit_code == ExitStatus.OFFLINE


def test_a_running_instance_run_blocks_report(node: Node) -> None:
    with (
        hold(layout.partitions_lock(node.config.instance_root), "instance"),
        pytest.raises(LockedError),
    ):
        node.run()
    assert node.calls() == []


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

    with (
        MasterServer(store, insecure=True) as master,
        SlapClient(master.url, COMPUTER_ID) as client,
    ):
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
