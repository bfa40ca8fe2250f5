"""A hostile master: path escapes, line breaks and shell characters are refused with a clear
error, reported, and nothing is written outside the roots (checked on the file system)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from recording_server import Answer, RecordingServer
from slapgrid.node.instance.run import run_instance
from slapgrid.node.software.run import run_software
from slapgrid.node.supervisor.control import Supervisor
from slapgrid.slap import marshal
from slapgrid.slap.client import SlapClient
from slapgrid.slap.documents import Computer, ComputerPartition, SoftwareRelease
from support.configs import node_config

pytestmark = pytest.mark.integration

GOOD_SR = "https://example.com/software.cfg"
HOSTILE_SRS = [
    "https://example.com/software.cfg; touch /tmp/slapgrid-pwned",
    "https://example.com/$(touch /tmp/slapgrid-pwned)/software.cfg",
    "https://example.com/software.cfg\n[buildout]\nparts = evil",
]


UNSENDABLE_IDS = ["slappart9\n", "slappärt", "slappart8\r\nX-Injected: 1"]
"""Ids no HTTP header may carry: refused, and not reported under them."""
LONG_ID = "x" * 101


def busy(pid: str, url: str = GOOD_SR) -> ComputerPartition:
    return ComputerPartition(
        "C", pid, "started", SoftwareRelease(url, "C"), {"timestamp": 1}, {}, "G"
    )


def hostile_computer() -> Computer:
    return Computer(
        "C",
        partitions=[
            busy("../../etc"),
            busy("slappart0/../../../outside"),
            busy(".slapgrid"),
            *(busy(pid) for pid in UNSENDABLE_IDS),
            busy(LONG_ID),
            *(busy(f"slappart{i}", url) for i, url in enumerate(HOSTILE_SRS, start=1)),
        ],
        software_releases=[SoftwareRelease(url, "C", "available") for url in HOSTILE_SRS]
        + [SoftwareRelease(url, "C", "destroyed") for url in HOSTILE_SRS],
    )


def fingerprint(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): (
            hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        )
        for path in sorted(root.rglob("*"))
    }


def test_hostile_master_answers_are_refused_and_nothing_escapes(tmp_path: Path) -> None:
    nest = tmp_path / "a" / "b"
    instance_root, software_root = nest / "instance", nest / "software"
    for path in (instance_root, software_root, tmp_path / "etc"):
        path.mkdir(parents=True)
    for i in range(1, 4):
        (instance_root / f"slappart{i}").mkdir(mode=0o750)
    (tmp_path / "etc" / "passwd").write_text("untouched\n")
    outside_before = {
        name: fingerprint(tmp_path / name) for name in ("etc",) if (tmp_path / name).exists()
    }

    with RecordingServer() as server:
        server.routes["getFullComputerInformation"] = Answer(
            200, marshal.dumps(hostile_computer().to_wire())
        )
        for endpoint in (
            "softwareReleaseError",
            "softwareInstanceError",
            "buildingSoftwareRelease",
        ):
            server.routes[endpoint] = Answer(200)
        config = node_config(
            nest,
            master_url=server.url,
            computer_id="C",
            software_min_free_space=0,
            instance_min_free_space=0,
        )
        try:
            with SlapClient(server.url, "C") as client:
                assert run_software(config, client).status == 1
                assert run_instance(config, client).status == 1
        finally:
            Supervisor(instance_root).shutdown()

    errors = [r.form for r in server.requests if r.path.endswith("Error")]
    software_errors = [f["url"] for f in errors if "url" in f]
    assert sorted(set(software_errors)) == sorted(HOSTILE_SRS)
    assert all("refusing software release URL" in f["error_log"] for f in errors if "url" in f)
    instance_errors = {f["computer_partition_id"]: f["error_log"] for f in errors if "url" not in f}
    assert set(instance_errors) == {
        "../../etc",
        "slappart0/../../../outside",
        ".slapgrid",
        LONG_ID,
        "slappart1",
        "slappart2",
        "slappart3",
    }
    assert all("refusing" in message for message in instance_errors.values())
    assert not any("x-injected" in r.headers for r in server.requests)
    assert not [r for r in server.requests if r.path.endswith("buildingSoftwareRelease")]

    # nothing outside the two roots, no software directory, no profile anywhere
    assert not Path("/tmp/slapgrid-pwned").exists()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b"]
    assert sorted(p.name for p in nest.iterdir()) == ["instance", "software"]
    assert {name: fingerprint(tmp_path / name) for name in outside_before} == outside_before
    assert [p for p in software_root.iterdir() if p.name != ".slapgrid"] == []
    assert not list(instance_root.rglob("buildout.cfg"))
