"""Our client's requests are the reference client's (slapos.slap 1.26.1), call by call.

Both clients make every call in tests/wire_cases.py against one recording server, each case
on its own master URL (`<server>/<case>/`). For every case the requests must be the same:
method, path, query string and form body byte for byte (field order and percent-encoding
included), and every header (`Content-Type`, `Authorization` on partition calls only, …).

Deliberate differences, left out of the comparison: `User-Agent` (ours `slapgrid/…`), and
the reference's `GET getHateoasUrl` at the start of every connection (no node path uses the
HATEOAS API; see docs/slap-calls.md).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest

import wire_cases as w
from recording_server import Answer, Recorded, RecordingServer
from slapgrid.slap import marshal
from slapgrid.slap.client import SlapClient
from slapgrid.slap.documents import ComputerPartition, SoftwareRelease
from slapgrid.slap.marshal import SlapObject

pytestmark = pytest.mark.interop

SCRIPT = Path(__file__).with_name("reference_calls.py")
DATA = Path(__file__).parents[1] / "unit" / "data"
REPORTS = (
    "buildingSoftwareRelease",
    "availableSoftwareRelease",
    "destroyedSoftwareRelease",
    "softwareReleaseError",
    "startedComputerPartition",
    "stoppedComputerPartition",
    "destroyedComputerPartition",
    "softwareInstanceError",
    "softwareInstanceBang",
    "softwareInstanceRename",
    "setComputerPartitionConnectionXml",
    "updateComputerPartitionRelatedInstanceList",
    "supplySupply",
    "useComputer",
    "computerBang",
    "loadComputerConfigurationFromXML",
)
"""The calls answered with an empty 200, as a master answers them."""
IGNORED_HEADERS = {"user-agent"}  # ours names slapgrid


def _ours(client: SlapClient, case: dict[str, Any]) -> object:
    """Our client's way of making `case`, as our agent and commands make it."""
    kind = case["call"]
    pid = w.PARTITION
    simple: dict[str, Callable[[], object]] = {
        "computer": client.computer,
        "register_partition": lambda: client.register_partition(pid),
        "partition_certificate": lambda: client.partition_certificate(pid),
        "building_software_release": lambda: client.building_software_release(w.SR),
        "available_software_release": lambda: client.available_software_release(w.SR),
        "destroyed_software_release": lambda: client.destroyed_software_release(w.SR),
        "software_release_error": lambda: client.software_release_error(w.SR, case["log"]),
        "started": lambda: client.started(pid),
        "stopped": lambda: client.stopped(pid),
        "destroyed": lambda: client.destroyed(pid),
        "instance_error": lambda: client.instance_error(
            pid, case["log"], case.get("slave_reference")
        ),
        "bang": lambda: client.bang(pid, case["message"]),
        "rename": lambda: client.rename(pid, case["new_name"], case.get("slave_reference")),
        "set_connection": lambda: client.set_connection(
            pid, case["parameters"], case.get("slave_reference")
        ),
        "update_related_instances": lambda: client.update_related_instances(
            pid, case["references"]
        ),
        "supply": lambda: client.supply(w.SR, case["computer"], case.get("state", "available")),
        "use_computer": lambda: client.use_computer(case["journal"]),
        "computer_bang": lambda: client.computer_bang(case["message"]),
        "load_computer_configuration": lambda: client.load_computer_configuration(
            case["definition"]
        ),
    }
    if kind in simple:
        return simple[kind]()
    return client.request(
        w.SR,
        case["reference"],
        software_type=case.get("software_type") or "default",
        parameters=case.get("parameters"),
        filter=case.get("filter"),
        state=case.get("state"),
        shared=case.get("shared", False),
        requester=w.PARTITION if kind == "request_by_partition" else None,
    )


def _computer_document(recorded: Recorded) -> Answer:
    legacy = recorded.path.startswith("/computer_legacy/")
    if legacy and recorded.path.endswith("/getFullComputerInformation"):
        return Answer(404, b"not here")
    return Answer(200, (DATA / "full_computer_information.xml").read_bytes())


def _routes() -> dict[str, Any]:
    partition = ComputerPartition(
        w.COMPUTER, w.PARTITION, "started", SoftwareRelease(w.SR, w.COMPUTER), {"a": "1"}, {}, "G"
    )
    instance = SlapObject(
        "SoftwareInstance",
        (),
        {
            "slap_computer_id": w.COMPUTER,
            "slap_computer_partition_id": "slappart1",
            "_requested_state": "started",
            "_instance_guid": "SOFTINST-1",
            "_parameter_dict": {"a": "1"},
            "_connection_dict": {"url": "http://x"},
        },
    )
    empty = {path: Answer(200, b"") for path in REPORTS}
    return {
        **empty,
        "getFullComputerInformation": _computer_document,
        "getComputerInformation": _computer_document,
        "registerComputerPartition": Answer(200, marshal.dumps(partition.to_wire())),
        "getComputerPartitionCertificate": Answer(
            200, marshal.dumps({"certificate": "CERT", "key": "KEY"})
        ),
        "requestComputerPartition": Answer(200, marshal.dumps(instance)),
    }  # getHateoasUrl, as any path not here: 404


def _by_case(requests: list[Recorded]) -> dict[str, list[Recorded]]:
    grouped: dict[str, list[Recorded]] = {name: [] for name in w.CASES}
    for request in requests:
        grouped[request.path.split("/")[1]].append(request)
    return grouped


def _wire(request: Recorded) -> dict[str, Any]:
    """What a master sees of one request (User-Agent aside); fields in order, then raw."""
    return {
        "method": request.method,
        "path": request.path,
        "query": request.raw_query,
        "fields": parse_qsl(request.body.decode("ascii"), keep_blank_values=True),
        "body": request.body.decode("ascii"),
        "headers": {k: v for k, v in request.headers.items() if k not in IGNORED_HEADERS},
    }


@pytest.fixture(scope="module")
def recorded(reference_python: Path) -> Iterator[dict[str, Any]]:
    """Both clients' requests per case, and how each case ended on either side."""
    with RecordingServer() as server:
        server.routes.update(_routes())
        result = subprocess.run(
            [str(reference_python), str(SCRIPT), server.url],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        theirs_ended = json.loads(result.stdout)
        theirs = _by_case(list(server.requests))
        server.requests.clear()
        ours_ended = {}
        for name, case in w.CASES.items():
            with SlapClient(f"{server.url}{name}/", w.COMPUTER) as client:
                try:
                    _ours(client, case)
                    ours_ended[name] = None
                except Exception as exc:  # compared below
                    ours_ended[name] = type(exc).__name__
        ours = _by_case(list(server.requests))
    yield {"theirs": theirs, "ours": ours, "theirs_ended": theirs_ended, "ours_ended": ours_ended}


@pytest.mark.parametrize("name", list(w.CASES))
def test_our_requests_are_the_reference_ones(recorded: dict[str, Any], name: str) -> None:
    assert recorded["theirs_ended"][name] is None
    assert recorded["ours_ended"][name] is None
    theirs = [r for r in recorded["theirs"][name] if not r.path.endswith("/getHateoasUrl")]
    ours = recorded["ours"][name]
    assert [_wire(r) for r in ours] == [_wire(r) for r in theirs]


def test_the_reference_asks_for_hateoas_once_per_connection_and_we_never_do(
    recorded: dict[str, Any],
) -> None:
    for name in w.CASES:
        hateoas = [r for r in recorded["theirs"][name] if r.path.endswith("/getHateoasUrl")]
        assert len(hateoas) == 1, name
        assert not [r for r in recorded["ours"][name] if r.path.endswith("/getHateoasUrl")]
