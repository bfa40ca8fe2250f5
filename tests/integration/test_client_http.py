"""The SLAP client over real HTTP on 127.0.0.1: every call, statuses, URLs, limits."""

from __future__ import annotations

import resource
import socket
from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from recording_server import Answer, Recorded, RecordingServer
from slapgrid.slap import marshal
from slapgrid.slap.client import SlapClient
from slapgrid.slap.documents import ComputerPartition, SoftwareRelease
from slapgrid.slap.errors import (
    ConnectionError,
    HTTPStatusError,
    NotFoundError,
    ProtocolError,
    ResourceNotReady,
    ServerError,
)
from slapgrid.slap.marshal import SlapObject
from slapgrid.slap.transport import normalise_master_url

pytestmark = pytest.mark.integration

DATA = Path(__file__).parents[1] / "unit" / "data"
COMPUTER_DOC = (DATA / "full_computer_information.xml").read_bytes()


def ok(body: bytes = b"") -> Answer:
    return Answer(200, body)


@pytest.fixture
def server() -> RecordingServer:
    with RecordingServer() as running:
        yield running


def test_computer_document_is_fetched_and_typed(server: RecordingServer) -> None:
    server.routes["getFullComputerInformation"] = ok(COMPUTER_DOC)
    with SlapClient(server.url, "COMP-1234") as client:
        computer = client.computer()
    assert [p.partition_id for p in computer.partitions] == ["slappart0", "slappart1"]
    assert [s.state for s in computer.software_releases] == ["available", "destroyed"]
    (request,) = server.requests
    assert (request.method, request.path, request.query) == (
        "GET",
        "/getFullComputerInformation",
        {"computer_id": "COMP-1234"},
    )
    assert request.headers["user-agent"].startswith("slapgrid/")


def test_legacy_computer_information_fallback_on_404(server: RecordingServer) -> None:
    server.routes["getComputerInformation"] = ok(COMPUTER_DOC)
    with SlapClient(server.url, "COMP-1234") as client:
        assert client.computer().computer_id == "COMP-1234"
    assert [r.path for r in server.requests] == [
        "/getFullComputerInformation",
        "/getComputerInformation",
    ]


def test_answer_for_another_computer_is_refused(server: RecordingServer) -> None:
    server.routes["getFullComputerInformation"] = ok(COMPUTER_DOC)
    with SlapClient(server.url, "COMP-OTHER") as client, pytest.raises(ProtocolError):
        client.computer()


def test_path_prefix_of_master_url_is_kept(server: RecordingServer) -> None:
    server.routes["getFullComputerInformation"] = ok(COMPUTER_DOC)
    with SlapClient(server.url + "erp5/portal_slap", "COMP-1234") as client:
        client.computer()
    assert server.requests[0].path == "/erp5/portal_slap/getFullComputerInformation"


PARTITION_AUTH = "X-SlapPartition computer_id=C, computer_partition_id=slappart0"


def fields(request: Recorded) -> list[tuple[str, str]]:
    """The form's fields in the order sent: the reference's order is pinned too."""
    return parse_qsl(request.body.decode("ascii"), keep_blank_values=True)


@pytest.mark.parametrize(
    ("call", "endpoint", "form"),
    [
        (
            lambda c: c.building_software_release("u"),
            "buildingSoftwareRelease",
            [("url", "u"), ("computer_id", "C")],
        ),
        (
            lambda c: c.available_software_release("u"),
            "availableSoftwareRelease",
            [("url", "u"), ("computer_id", "C")],
        ),
        (
            lambda c: c.destroyed_software_release("u"),
            "destroyedSoftwareRelease",
            [("url", "u"), ("computer_id", "C")],
        ),
        (
            lambda c: c.software_release_error("u", "boom"),
            "softwareReleaseError",
            [("url", "u"), ("computer_id", "C"), ("error_log", "boom")],
        ),
        (
            lambda c: c.use_computer("<journal/>"),
            "useComputer",
            [("computer_id", "C"), ("use_string", "<journal/>")],
        ),
        (
            lambda c: c.computer_bang("Reboot"),
            "computerBang",
            [("computer_id", "C"), ("message", "Reboot")],
        ),
    ],
)
def test_computer_scoped_posts(server: RecordingServer, call, endpoint, form) -> None:  # type: ignore[no-untyped-def]
    server.routes[endpoint] = ok()
    with SlapClient(server.url, "C") as client:
        call(client)
    (request,) = server.requests
    assert request.method == "POST" and request.path == f"/{endpoint}"
    assert fields(request) == form
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert "authorization" not in request.headers


def test_an_empty_usage_journal_is_not_sent(server: RecordingServer) -> None:
    with SlapClient(server.url, "C") as client:
        client.use_computer("")
    assert server.requests == []


@pytest.mark.parametrize(
    ("call", "endpoint", "extra"),
    [
        (lambda c: c.started("slappart0"), "startedComputerPartition", {}),
        (lambda c: c.stopped("slappart0"), "stoppedComputerPartition", {}),
        (lambda c: c.destroyed("slappart0"), "destroyedComputerPartition", {}),
        (
            lambda c: c.instance_error("slappart0", "it broke"),
            "softwareInstanceError",
            {"error_log": "it broke"},  # no slave_reference: not a shared instance
        ),
        (
            lambda c: c.instance_error("slappart0", "it broke", "SHARED-1"),
            "softwareInstanceError",
            {"error_log": "it broke", "slave_reference": "SHARED-1"},
        ),
        (
            lambda c: c.rename("slappart0", "new"),
            "softwareInstanceRename",
            {"new_name": "new"},
        ),
        (
            lambda c: c.bang("slappart0", "died"),
            "softwareInstanceBang",
            {"message": "died"},
        ),
        (
            lambda c: c.rename("slappart0", "new", "SHARED-1"),
            "softwareInstanceRename",
            {"new_name": "new", "slave_reference": "SHARED-1"},
        ),
        (
            lambda c: c.set_connection("slappart0", {"url": "http://a&b/"}),
            "setComputerPartitionConnectionXml",
            {
                "connection_xml": marshal.dumps({"url": "http://a&b/"}).decode(),
                "slave_reference": "None",
            },
        ),
        (
            lambda c: c.update_related_instances("slappart0", ["child"]),
            "updateComputerPartitionRelatedInstanceList",
            {"instance_reference_xml": marshal.dumps(["child"]).decode()},
        ),
    ],
)
def test_partition_scoped_posts_carry_the_partition_header(
    server: RecordingServer,
    call,  # type: ignore[no-untyped-def]
    endpoint: str,
    extra: dict[str, str],
) -> None:
    server.routes[endpoint] = ok()
    with SlapClient(server.url, "C") as client:
        call(client)
    (request,) = server.requests
    assert request.path == f"/{endpoint}"
    ids = [("computer_id", "C"), ("computer_partition_id", "slappart0")]
    assert fields(request) == [*ids, *extra.items()]
    assert request.headers["authorization"] == PARTITION_AUTH


def test_register_partition_and_certificate(server: RecordingServer) -> None:
    partition = ComputerPartition(
        "C", "slappart0", "started", SoftwareRelease("u", "C"), {"timestamp": 1}, {}, "G"
    )
    server.routes["registerComputerPartition"] = ok(marshal.dumps(partition.to_wire()))
    server.routes["getComputerPartitionCertificate"] = ok(
        marshal.dumps({"certificate": "CERT", "key": "KEY"})
    )
    with SlapClient(server.url, "C") as client:
        assert client.register_partition("slappart0") == partition
        assert client.partition_certificate("slappart0") == ("CERT", "KEY")
    assert server.requests[0].query == {
        "computer_reference": "C",
        "computer_partition_reference": "slappart0",
    }
    assert server.requests[1].query == {"computer_id": "C", "computer_partition_id": "slappart0"}


def _instance_answer(_: Recorded) -> Answer:
    document = SlapObject(
        "SoftwareInstance",
        (),
        {"slap_computer_id": "C", "slap_computer_partition_id": "slappart1"},
    )
    return ok(marshal.dumps(document))


def test_request_by_a_user_sends_all_seven_fields(server: RecordingServer) -> None:
    server.routes["requestComputerPartition"] = _instance_answer
    with SlapClient(server.url, "C") as client:
        instance = client.request("u", "My Instance", parameters={"n": 1}, shared=False)
    assert instance.partition_id == "slappart1"
    (request,) = server.requests
    assert fields(request) == [  # the reference's OpenOrder's order
        ("software_release", "u"),
        ("partition_reference", "My Instance"),
        ("partition_parameter_xml", marshal.dumps({"n": 1}).decode()),
        ("filter_xml", '<marshal><dictionary id="i2"/></marshal>'),
        ("software_type", "default"),
        ("state", "<marshal><none/></marshal>"),
        ("shared_xml", "<marshal><bool>0</bool></marshal>"),
    ]
    assert "authorization" not in request.headers


def test_request_by_a_partition_names_the_requester(server: RecordingServer) -> None:
    server.routes["requestComputerPartition"] = _instance_answer
    with SlapClient(server.url, "C") as client:
        client.request("u", "child", state="stopped", shared=True, requester="slappart0")
    (request,) = server.requests
    assert request.headers["authorization"] == PARTITION_AUTH
    assert [name for name, _ in fields(request)] == [  # the reference's ComputerPartition's
        "computer_id",
        "computer_partition_id",
        "software_release",
        "software_type",
        "partition_reference",
        "shared_xml",
        "partition_parameter_xml",
        "filter_xml",
        "state",
    ]
    assert request.form["state"] == "<marshal><string>stopped</string></marshal>"
    assert request.form["shared_xml"] == "<marshal><bool>1</bool></marshal>"


def test_supply_and_format_registration(server: RecordingServer) -> None:
    server.routes["supplySupply"] = ok()
    server.routes["loadComputerConfigurationFromXML"] = ok()
    with SlapClient(server.url, "C") as client:
        client.supply("u", state="destroyed")
        client.load_computer_configuration({"reference": "C", "partition_list": []})
    assert server.requests[0].form == {"url": "u", "computer_id": "C", "state": "destroyed"}
    assert marshal.loads(server.requests[1].form["xml"]) == {
        "reference": "C",
        "partition_list": [],
    }


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (404, NotFoundError),
        (408, ResourceNotReady),
        (500, ServerError),
        (503, ServerError),
        (523, ServerError),
        (400, HTTPStatusError),
        (403, HTTPStatusError),
        (504, HTTPStatusError),
    ],
)
def test_status_codes_map_to_typed_errors(server: RecordingServer, status: int, error) -> None:  # type: ignore[no-untyped-def]
    server.routes["startedComputerPartition"] = Answer(status, b"detail line\nmore")
    with SlapClient(server.url, "C") as client, pytest.raises(error) as caught:
        client.started("slappart0")
    assert caught.value.status == status
    assert "detail line" in str(caught.value) and "more" not in str(caught.value)


def test_unreachable_master_is_a_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = SlapClient(f"http://127.0.0.1:{port}/", "C")
    with client, pytest.raises(ConnectionError, match="cannot connect"):
        client.computer()


def test_wrong_class_in_answer_is_a_protocol_error(server: RecordingServer) -> None:
    server.routes["getFullComputerInformation"] = ok(
        b'<marshal><object id="i2" module="os" class="system"><tuple/></object></marshal>'
    )
    with SlapClient(server.url, "C") as client, pytest.raises(ProtocolError, match="refusing"):
        client.computer()


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "streamed"])
def test_fifty_megabyte_answer_is_refused_with_bounded_memory(
    server: RecordingServer, declared: bool
) -> None:
    body = b"<marshal>" + b" " * (50 << 20)
    server.routes["getFullComputerInformation"] = Answer(200, body, declare_length=declared)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with SlapClient(server.url, "C") as client:
        client.transport.max_response_bytes = 8 << 20
        with pytest.raises(ProtocolError, match="exceeds"):
            client.computer()
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 40


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://fe80::1:50000/foo/", "http://[fe80::1]:50000/foo/"),
        ("http://fe80::1:5000/foo/", "http://[fe80::1:5000]/foo/"),  # a valid address wins
        ("http://[::1]:5000", "http://[::1]:5000/"),
        ("https://2001:db8::2", "https://[2001:db8::2]/"),
        ("https://h/erp5/portal_slap", "https://h/erp5/portal_slap/"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/"),
    ],
)
def test_master_url_normalisation(given: str, expected: str) -> None:
    assert normalise_master_url(given) == expected


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_ipv6_literal_master() -> None:
    with RecordingServer(host="::1") as server:
        server.routes["getFullComputerInformation"] = ok(COMPUTER_DOC)
        bare = server.url.replace("[", "").replace("]", "")  # http://::1:PORT/
        with SlapClient(bare, "COMP-1234") as client:
            assert client.computer().computer_id == "COMP-1234"
