"""What the master refuses over HTTP, with which status, and that a refusal changes nothing."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from master_site import dump, get, post, served, small_computer
from slapgrid.master.server import MasterServer
from slapgrid.slap import marshal
from slapgrid.slap.client import SlapClient
from support.waiting import wait_for

pytestmark = pytest.mark.integration

COMP = "COMP-HTTP"
SR = "https://example.com/software/web/software.cfg"
FRONTEND = "https://example.com/software/frontend/software.cfg"


@pytest.fixture
def master(tmp_path: Path, database: str) -> Iterator[MasterServer]:
    with served(tmp_path, COMP, database=database) as server:
        yield server


@pytest.fixture
def node(master: MasterServer) -> Iterator[SlapClient]:
    with SlapClient(master.url, COMP) as client:
        yield client


REQUEST = {
    "software_release": SR,
    "software_type": "default",
    "partition_reference": "x",
    "partition_parameter_xml": dump({}),
    "filter_xml": dump({}),
    "state": dump(None),
    "shared_xml": dump(False),
}


def access_line(caplog: pytest.LogCaptureFixture, start: str) -> str:
    """The access log line that starts with `start` (written just after the answer)."""
    return wait_for(
        lambda: next(
            (
                message
                for r in caplog.records
                if r.name == "slapgrid.master.access"
                and (message := r.getMessage()).split(" ", 1)[-1].startswith(start)
            ),
            None,
        ),
        what=f"the access log line {start!r}",
    )


BAD_CALLS: list[tuple[str, str, dict[str, str], int]] = [
    ("POST", "getFullComputerInformation", {"computer_id": COMP}, 405),
    ("GET", "requestComputerPartition", {}, 405),
    ("GET", "getFullComputerInformation", {}, 400),
    ("GET", "getFullComputerInformation", {"computer_id": "NOPE"}, 404),
    ("GET", "hateoas", {"mode": "search", "query": 'title:="x"'}, 400),
    ("GET", "hateoas", {"mode": "traverse", "relative_url": "/etc/passwd"}, 400),
    ("GET", "hateoas", {"mode": "traverse", "relative_url": "instance_tree/nope"}, 404),
    ("GET", "hateoas", {"mode": "edit"}, 400),
    ("GET", "registerComputerPartition", {"computer_reference": COMP}, 400),
    (
        "GET",
        "registerComputerPartition",
        {"computer_reference": COMP, "computer_partition_reference": "slappart9"},
        404,
    ),
    (
        "POST",
        "startedComputerPartition",
        {"computer_id": COMP, "computer_partition_id": "None"},
        400,
    ),
    ("POST", "startedComputerPartition", {"computer_id": COMP, "computer_partition_id": "p9"}, 404),
    ("POST", "supplySupply", {"url": SR, "computer_id": COMP, "state": "gone"}, 400),
    ("POST", "supplySupply", {"url": SR, "computer_id": "NOPE", "state": "available"}, 404),
    ("POST", "loadComputerConfigurationFromXML", {"xml": "<marshal><dict"}, 400),
    ("POST", "loadComputerConfigurationFromXML", {"xml": dump({"reference": "C"})}, 400),
    ("POST", "requestComputerPartition", {**REQUEST, "partition_parameter_xml": "<x>"}, 400),
    ("POST", "requestComputerPartition", {**REQUEST, "state": dump(3)}, 400),
    ("POST", "requestComputerPartition", {**REQUEST, "shared_xml": dump("yes")}, 400),
    (
        "POST",
        "requestComputerPartition",
        {**REQUEST, "filter_xml": dump({"computer_guid": "N"})},
        404,
    ),
    (
        "POST",
        "requestComputerPartition",
        {**REQUEST, "computer_id": COMP, "computer_partition_id": "p9"},
        404,
    ),
    (
        "POST",
        "requestComputerPartition",
        {**REQUEST, "shared_xml": dump(True), "software_release": FRONTEND},
        404,
    ),
    ("POST", "useComputer", {"computer_id": COMP, "use_string": "<journal/>"}, 400),
    (
        "POST",
        "setComputerPartitionConnectionXml",
        {"computer_id": COMP, "computer_partition_id": "slappart0", "connection_xml": "nope"},
        400,
    ),
    (
        "POST",
        "destroyedComputerPartition",
        {"computer_id": COMP, "computer_partition_id": "slappart0"},
        409,
    ),
    ("POST", "destroyedSoftwareRelease", {"computer_id": COMP, "url": SR}, 409),
    # what XML cannot carry never reaches the database (every later answer would fail)
    ("POST", "requestComputerPartition", {**REQUEST, "partition_reference": "a\x01b"}, 400),
    ("POST", "requestComputerPartition", {**REQUEST, "software_type": "t\ufffe"}, 400),
    (
        "POST",
        "requestComputerPartition",
        {**REQUEST, "shared_xml": "<marshal><bool>2</bool></marshal>"},
        400,
    ),
    ("GET", "getFullComputerInformation", {"computer_id": "\x1b[31m"}, 400),
    *(
        ("POST", "loadComputerConfigurationFromXML", {"xml": dump(definition)}, 400)
        for definition in (
            small_computer(COMP, 1) | {"partition_list": [{"reference": name}]}
            for name in ("..", "a/b", "etc", "var", "x\ny", "", ".hidden")
        )
    ),
    (
        "POST",
        "loadComputerConfigurationFromXML",
        {"xml": dump({"reference": "../C", "partition_list": []})},
        400,
    ),
]


@pytest.mark.parametrize(
    ("method", "endpoint", "params", "status"),
    BAD_CALLS,
    ids=[f"{c[1]}-{c[3]}-{i}" for i, c in enumerate(BAD_CALLS)],
)
def test_bad_calls_get_their_status_and_change_nothing(
    master: MasterServer,
    node: SlapClient,
    caplog: pytest.LogCaptureFixture,
    method: str,
    endpoint: str,
    params: dict[str, str],
    status: int,
) -> None:
    caplog.set_level(logging.INFO, logger="slapgrid.master.access")
    node.load_computer_configuration(small_computer(COMP, 1))
    node.supply(SR)
    node.request(SR, "only")  # fills the only partition
    before, generation = master.store.snapshot(), master.store.generation(COMP)
    if method == "GET":
        response = get(master, endpoint, **params)
    else:
        response = post(master, endpoint, **params)
    assert response.status_code == status, response.text
    assert access_line(caplog, f"{method} /{endpoint} {status} ")
    assert master.store.snapshot() == before
    assert master.store.generation(COMP) == generation


def test_x_slappartition_header_identifies_the_requester(
    master: MasterServer, node: SlapClient
) -> None:
    node.load_computer_configuration(small_computer(COMP, 2))
    node.request(SR, "parent")
    header = {
        "Authorization": f"X-SlapPartition computer_id={COMP}, computer_partition_id=slappart0"
    }
    response = httpx.post(master.url + "requestComputerPartition", data=REQUEST, headers=header)
    answer = marshal.loads(response.content)
    assert answer.state["root_instance_title"] == "parent"
    header["Authorization"] = f"x-slappartition computer_id={COMP}, computer_partition_id=nope"
    response = httpx.post(master.url + "requestComputerPartition", data=REQUEST, headers=header)
    assert response.status_code == 404
