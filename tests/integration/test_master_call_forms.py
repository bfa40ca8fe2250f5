"""The embedded master accepts each call in every form a client sends it.

slapgrid now sends what slapos.slap 1.26.1 sends (tests/interop/test_wire_calls.py), but
older slapgrids and older reference clients send some calls differently: `slave_reference`
as the literal `None` (any case) or empty instead of leaving it out, and fields in another
order. Each form must mean the same thing: "None" is never taken for a shared instance's
reference.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from master_site import partition, served, small_computer
from slapgrid.master.server import MasterServer
from slapgrid.slap import marshal
from slapgrid.slap.client import SlapClient

pytestmark = pytest.mark.integration

COMP = "COMP-FORMS"
SR = "https://example.com/software/web/software.cfg"
FRONTEND = "https://example.com/software/frontend/software.cfg"
IDS = {"computer_id": COMP, "computer_partition_id": "slappart0"}
AUTH = {"Authorization": f"X-SlapPartition computer_id={COMP}, computer_partition_id=slappart0"}

OWN_INSTANCE_FORMS = {
    "absent": {},
    "None": {"slave_reference": "None"},
    "none": {"slave_reference": "none"},
    "empty": {"slave_reference": ""},
}


@pytest.fixture
def master(tmp_path: Path, database: str) -> Iterator[MasterServer]:
    """slappart0 hosts `web` (requested by a user), slappart1 a frontend with `site` on it."""
    with served(tmp_path, COMP, database=database) as server, SlapClient(server.url, COMP) as node:
        node.load_computer_configuration(small_computer(COMP, 2))
        node.supply(SR)
        node.supply(FRONTEND)
        node.request(SR, "web")
        node.request(FRONTEND, "frontend")
        node.request(FRONTEND, "site", shared=True, requester="slappart0")
        yield server


def post(master: MasterServer, endpoint: str, fields: dict[str, str]) -> httpx.Response:
    """`fields` in the order given, as a form body, with the partition header."""
    answer = httpx.post(master.url + endpoint, data=fields, headers=AUTH)
    assert answer.status_code == 200, answer.text
    return answer


def shared_reference(master: MasterServer) -> str:
    with SlapClient(master.url, COMP) as node:
        [shared] = partition(node.computer(), "slappart1").slave_instance_list
    return str(shared["slave_reference"])


@pytest.mark.parametrize("form", list(OWN_INSTANCE_FORMS))
def test_an_error_without_a_shared_reference_is_the_partitions_own(
    master: MasterServer, form: str
) -> None:
    post(master, "softwareInstanceError", {**IDS, "error_log": "boom", **OWN_INSTANCE_FORMS[form]})
    with SlapClient(master.url, COMP) as node:
        status = partition(node.computer(), "slappart0").access_status
    assert status == "#error while instanciating: boom"


@pytest.mark.parametrize("form", list(OWN_INSTANCE_FORMS))
def test_a_rename_without_a_shared_reference_is_the_partitions_own(
    master: MasterServer, form: str
) -> None:
    post(master, "softwareInstanceRename", {**IDS, "new_name": "site", **OWN_INSTANCE_FORMS[form]})
    with SlapClient(master.url, COMP) as node:
        assert partition(node.computer(), "slappart0").instance_title == "site"


@pytest.mark.parametrize("form", list(OWN_INSTANCE_FORMS))
def test_a_connection_without_a_shared_reference_is_the_partitions_own(
    master: MasterServer, form: str
) -> None:
    document = marshal.dumps({"url": "http://web"}).decode()
    post(
        master,
        "setComputerPartitionConnectionXml",
        {**IDS, "connection_xml": document, **OWN_INSTANCE_FORMS[form]},
    )
    with SlapClient(master.url, COMP) as user:
        assert user.request(SR, "web").connection == {"url": "http://web"}


def test_calls_naming_a_shared_instance_reach_it(master: MasterServer) -> None:
    reference = shared_reference(master)
    hosted = {"computer_id": COMP, "computer_partition_id": "slappart1"}
    auth = {"Authorization": AUTH["Authorization"].replace("slappart0", "slappart1")}
    document = marshal.dumps({"site": "https://front"}).decode()
    for endpoint, fields in (
        ("softwareInstanceError", {"error_log": "bad certificate"}),
        ("setComputerPartitionConnectionXml", {"connection_xml": document}),
    ):
        form = {**hosted, **fields, "slave_reference": reference}
        answer = httpx.post(master.url + endpoint, data=form, headers=auth)
        assert answer.status_code == 200, answer.text
    with SlapClient(master.url, COMP) as node:
        shared = node.request(FRONTEND, "site", shared=True, requester="slappart0")
        frontend = partition(node.computer(), "slappart1")
    assert shared.connection == {"site": "https://front"}
    assert "bad certificate" not in str(frontend.access_status)  # the host's is untouched


@pytest.mark.parametrize(
    "order", [("computer_id", "url"), ("url", "computer_id")], ids=["older", "reference"]
)
def test_software_release_reports_in_either_field_order(
    master: MasterServer, order: tuple[str, str]
) -> None:
    values = {"computer_id": COMP, "url": SR}
    fields = {name: values[name] for name in order}
    post(master, "softwareReleaseError", {**fields, "error_log": "compilation failed"})
    status = httpx.get(
        master.url + "getSoftwareInstallationStatus", params={"computer_id": COMP, "url": SR}
    )
    assert marshal.loads(status.content)["text"] == f"#error while installing {SR}"


def test_a_request_with_only_the_release_and_the_title(master: MasterServer) -> None:
    """Old clients left out what they did not set: defaults, not 400 or 500."""
    answer = httpx.post(
        master.url + "requestComputerPartition",
        data={"software_release": SR, "partition_reference": "web"},
    )
    assert answer.status_code == 200, answer.text
    instance = marshal.loads(answer.content)
    assert instance.state["slap_computer_partition_id"] == "slappart0"  # the same instance
    assert instance.state["_requested_state"] == "started"
