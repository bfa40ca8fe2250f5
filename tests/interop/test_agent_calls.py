"""Each node command calls the master as the reference agent does, on the same node.

`slapgrid software|instance|report` and `slapos node software|instance|report` (1.26.1) run
in turn against a recording server that serves one computer document, each on a node set
up alike. The requests must be the same: method, path, query, form fields in order with
their values, and headers. Left out: what each agent words in its own way (`error_log`,
hence `Content-Length`), `User-Agent`, and the reference's `getHateoasUrl`. These need no
build: what is requested is already built, already gone, or cannot be deployed.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest

import reference_env
from recording_server import Answer, Recorded, RecordingServer
from slapgrid.node import layout
from slapgrid.node.safety import software_hash
from slapgrid.slap import marshal
from slapgrid.slap.documents import Computer, ComputerPartition, SoftwareRelease

pytestmark = pytest.mark.interop

COMPUTER = "COMP-AGENT"
BUILT = "https://example.com/built/software.cfg"
GONE = "https://example.com/gone/software.cfg"
MISSING = "https://example.com/missing/software.cfg"
WORDED = {"error_log"}  # each agent's own words
IGNORED_HEADERS = {"user-agent", "content-length", "host"}  # host: each its own port
CALLS = (
    "buildingSoftwareRelease",
    "availableSoftwareRelease",
    "destroyedSoftwareRelease",
    "softwareReleaseError",
    "startedComputerPartition",
    "stoppedComputerPartition",
    "destroyedComputerPartition",
    "softwareInstanceError",
    "updateComputerPartitionRelatedInstanceList",
    "useComputer",
)


def _partition(state: str) -> ComputerPartition:
    parameters = {
        "timestamp": "1",
        "slap_software_type": "default",
        "instance_title": "web",
        "ip_list": [["slaptap0", "10.0.0.2"]],
        "slave_instance_list": [],
    }
    release = SoftwareRelease(MISSING, COMPUTER)
    return ComputerPartition(COMPUTER, "slappart0", state, release, parameters, {}, "SOFTINST-1")


@dataclass(frozen=True)
class Scenario:
    command: str
    computer: Computer
    prepare: Callable[[Path, str], None]  # (node root, owner's name)
    ours_only: tuple[str, ...] = ()  # calls only ours makes, on purpose (docs/slap-calls.md)


def _built_release(root: Path, _owner: str) -> None:
    built = root / "software" / software_hash(BUILT)
    built.mkdir()
    (built / ".completed").write_text("")


def _formatted_partition(root: Path, owner: str) -> None:
    partition = root / "instance" / "slappart0"
    partition.mkdir(mode=0o750)
    partition.chmod(0o750)
    (partition / layout.RESOURCE_FILE).write_text(json.dumps({"user": {"name": owner}}))


SCENARIOS = {
    # one release already built, one requested destroyed and never built
    "software": Scenario(
        "software",
        Computer(
            COMPUTER,
            [],
            [
                SoftwareRelease(BUILT, COMPUTER, "available"),
                SoftwareRelease(GONE, COMPUTER, "destroyed"),
            ],
        ),
        _built_release,
    ),
    # a partition to start whose release is not built: the error goes to the master
    "instance": Scenario(
        "instance",
        Computer(COMPUTER, [_partition("started")], [SoftwareRelease(MISSING, COMPUTER)]),
        _formatted_partition,
    ),
    # a destroyed partition with nothing in it: stopped, then destroyed; ours first sends
    # the usage it measured (the reference sends only usage documents instances wrote)
    "report": Scenario(
        "report",
        Computer(COMPUTER, [_partition("destroyed")], []),
        _formatted_partition,
        ours_only=("/useComputer",),
    ),
}


def _call(request: Recorded) -> dict[str, Any]:
    fields = parse_qsl(request.body.decode("ascii"), keep_blank_values=True)
    return {
        "method": request.method,
        "path": request.path,
        "query": request.raw_query,
        "fields": [(name, "…" if name in WORDED else value) for name, value in fields],
        "headers": {k: v for k, v in request.headers.items() if k not in IGNORED_HEADERS},
    }


def _run(agent: str, venv: Path, owner: Any, scenario: Scenario) -> list[dict[str, Any]]:
    """One agent's run of `scenario` on a fresh node; the calls it made."""
    root = reference_env.public_tempdir("slapgrid-calls-")
    try:
        (root / "software").mkdir()
        (root / "instance").mkdir()
        scenario.prepare(root, owner.pw_name)
        reference_env.give_to(owner, root / "software", root / "instance")
        with RecordingServer() as server:
            document = marshal.dumps(scenario.computer.to_wire())
            server.routes["getFullComputerInformation"] = Answer(200, document)
            server.routes.update({call: Answer(200, b"") for call in CALLS})
            config = reference_env.write_node_config(
                root / "slapos.cfg",
                master_url=server.url,
                computer_id=COMPUTER,
                software_root=root / "software",
                instance_root=root / "instance",
            )
            if agent == "reference":
                command = reference_env.reference(venv, scenario.command, config)
            else:
                command = reference_env.ours(scenario.command, config)
            run = reference_env.run_node(command, timeout=300)
            calls = [_call(r) for r in server.requests if not r.path.endswith("/getHateoasUrl")]
        assert calls, f"{agent} {scenario.command} made no call:\n{run.output[-3000:]}"
        return calls
    finally:
        reference_env.stop_supervisord(root / "instance")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def owner(reference_venv: Path) -> Iterator[Any]:
    try:
        yield reference_env.node_user(reference_venv / "bin" / "python")
    except reference_env.Unavailable as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_our_agent_calls_the_master_as_the_reference_does(
    reference_venv: Path, owner: Any, name: str
) -> None:
    scenario = SCENARIOS[name]
    theirs = _run("reference", reference_venv, owner, scenario)
    ours = _run("ours", reference_venv, owner, scenario)
    for path in scenario.ours_only:
        assert [call["path"] for call in ours].count(path) == 1
    assert [call for call in ours if call["path"] not in scenario.ours_only] == theirs
