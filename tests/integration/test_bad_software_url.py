"""A Software Release URL the agent refuses is that release's error, never the node's.

Any master may list one (only the embedded master refuses it at supply time): the release
beside it is still built with the real buildout, the bad one is reported with
`softwareReleaseError`, and once the master no longer wants it, it is never mentioned again.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from recording_server import Answer, RecordingServer
from slapgrid.exit_status import ExitStatus
from slapgrid.node.config import NodeConfig
from slapgrid.node.safety import software_hash
from slapgrid.node.software.run import run_software
from slapgrid.node.state import StateStore
from slapgrid.slap import marshal
from slapgrid.slap.client import SlapClient
from slapgrid.slap.documents import Computer, SoftwareRelease

pytestmark = pytest.mark.integration

BAD = "https://example.com/software.cfg; touch /tmp/slapgrid-pwned"
TINY = "[buildout]\nparts = hello\n[hello]\nrecipe = zc.buildout:debug\n"
CALLS = ("buildingSoftwareRelease", "availableSoftwareRelease", "softwareReleaseError")


def listing(*releases: tuple[str, str]) -> Answer:
    computer = Computer(
        "C", software_releases=[SoftwareRelease(url, "C", state) for url, state in releases]
    )
    return Answer(200, marshal.dumps(computer.to_wire()))


def calls(server: RecordingServer) -> list[tuple[str, str]]:
    """(endpoint, url) of each software report, in order; then forgets them."""
    made = [
        (r.path.rsplit("/", 1)[-1], r.form["url"])
        for r in server.requests
        if r.path.rsplit("/", 1)[-1] in (*CALLS, "destroyedSoftwareRelease")
    ]
    server.requests.clear()
    return made


def test_a_refused_url_is_its_own_error_and_leaves_once_removed(tmp_path: Path) -> None:
    good = tmp_path / "good.cfg"
    good.write_text(TINY)
    config = NodeConfig(
        master_url="http://127.0.0.1:9/",
        computer_id="C",
        instance_root=tmp_path / "instance",
        software_root=tmp_path / "software",
        software_min_free_space=0,
    )
    config.instance_root.mkdir()
    config.software_root.mkdir()
    with RecordingServer() as server:
        server.routes.update({call: Answer(200) for call in (*CALLS, "destroyedSoftwareRelease")})
        with SlapClient(server.url, "C") as client:
            server.routes["getFullComputerInformation"] = listing(
                (BAD, "available"), (str(good), "available")
            )
            assert run_software(config, client).status == ExitStatus.FAILED
            made = calls(server)
            assert ("softwareReleaseError", BAD) in made
            assert [c for c in made if c[1] == str(good)] == [
                ("buildingSoftwareRelease", str(good)),
                ("availableSoftwareRelease", str(good)),
            ]
            assert (config.software_root / software_hash(str(good)) / ".completed").exists()
            assert not (config.software_root / software_hash(BAD)).exists()
            assert set(StateStore(config.software_root).failures()) == {BAD}  # in back-off

            # the master no longer lists it: forgotten, never mentioned nor retried again
            server.routes["getFullComputerInformation"] = listing((str(good), "available"))
            run = run_software(config, client)
            assert (run.status, run.failures) == (ExitStatus.OK, {})
            assert calls(server) == []

            # a master that lists it destroyed: confirmed at once (nothing was built), no error
            server.routes["getFullComputerInformation"] = listing(
                (BAD, "destroyed"), (str(good), "available")
            )
            assert run_software(config, client).status == ExitStatus.OK
            assert calls(server) == [("destroyedSoftwareRelease", BAD)]
    assert not Path("/tmp/slapgrid-pwned").exists()
