"""Migrating a node the reference formatted: the reference's own code writes its computer
definition (`computer_xml`, `computer_json`), then `slapgrid format` runs on it for real."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recording_server import Answer, RecordingServer
from slapgrid.node.format.run import run_format
from slapgrid.node.identity import Identity
from slapgrid.slap import marshal

pytestmark = pytest.mark.interop

WRITER = Path(__file__).with_name("reference_format.py")
LOAD = "loadComputerConfigurationFromXML"


@pytest.fixture
def master() -> Iterator[RecordingServer]:
    with RecordingServer(routes={LOAD: Answer(200, b"")}) as server:
        yield server


@pytest.fixture
def reference_node(reference_python: Path, tmp_path: Path) -> Path:
    """A directory with slapos.xml and slapos.json as `slapos node format` leaves them."""
    node = tmp_path / "reference"
    node.mkdir()
    result = subprocess.run(
        [str(reference_python), str(WRITER), str(node)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return node


def options(node: Path, url: str, **extra: Any) -> dict[str, Any]:
    return {
        "master_url": url,
        "computer_id": "COMP-REF",
        "instance_root": str(node / "instance"),
        "software_root": str(node / "software"),
        "partition_amount": 3,
        "computer_xml": str(node / "slapos.xml"),  # the reference's key, as in its slapos.cfg
        "alter_user": False,
        **extra,
    }


def test_format_keeps_the_reference_partitions_and_addresses(
    reference_node: Path, master: RecordingServer
) -> None:
    theirs = json.loads((reference_node / "slapos.json").read_text())
    assert run_format(None, options(reference_node, master.url)) == 0
    saved = json.loads((reference_node / "instance" / ".slapgrid" / "computer.json").read_text())
    for ours, old in zip(saved["partition_list"], theirs["partition_list"], strict=True):
        assert ours["reference"] == old["reference"]
        assert ours["address_list"] == old["address_list"]
        assert ours["ipv6_range"] == old["ipv6_range"]
        assert (ours["tap"], ours["tun"]) == (old["tap"], old["tun"])
    assert saved["address"] == theirs["address"]
    [request] = [r for r in master.requests if r.path.endswith(LOAD)]
    assert marshal.loads(request.form["xml"]) == saved
    # a second run reads our description and changes nothing
    before = (reference_node / "instance" / ".slapgrid" / "computer.json").read_text()
    assert run_format(None, options(reference_node, master.url)) == 0
    assert (reference_node / "instance" / ".slapgrid" / "computer.json").read_text() == before


def test_as_root_the_reference_users_are_kept(
    reference_node: Path, master: RecordingServer, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = options(reference_node, master.url, alter_user=None)
    assert run_format(None, flags, dry_run=True, identity=Identity("root", 0, 0)) == 0
    out = capsys.readouterr().out.splitlines()
    for index, user in enumerate(("slapuser7", "slapuser8", "slapuser9")):
        partition = reference_node / "instance" / f"slappart{index}"
        assert f"would create user {user} (home {partition})" in out
        assert [line for line in out if line.startswith(f"  slappart{index}: user {user}, 10.0.")]
    assert master.requests == []
