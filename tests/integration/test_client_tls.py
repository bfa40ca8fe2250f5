"""The SLAP client over HTTPS on 127.0.0.1: its certificate, and the master it trusts."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme

from recording_server import Answer, RecordingServer
from slapgrid.slap.client import SlapClient
from slapgrid.slap.errors import ConnectionError

pytestmark = pytest.mark.integration

COMPUTER_DOC = (
    Path(__file__).parents[1] / "unit" / "data" / "full_computer_information.xml"
).read_bytes()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    client_cert = ca.issue_cert("COMP-1234")
    paths = {
        "ca": directory / "ca.pem",
        "server": directory / "server.pem",
        "client_cert": directory / "client.crt",
        "client_key": directory / "client.key",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server_cert.private_key_and_cert_chain_pem.write_to_path(str(paths["server"]))
    client_cert.cert_chain_pems[0].write_to_path(str(paths["client_cert"]))
    client_cert.private_key_pem.write_to_path(str(paths["client_key"]))
    other = trustme.CA()
    paths["other_ca"] = directory / "other-ca.pem"
    other.cert_pem.write_to_path(str(paths["other_ca"]))
    return paths


def _tls_server(pki: dict[str, Path]) -> RecordingServer:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pki["server"]))
    context.load_verify_locations(str(pki["ca"]))
    context.verify_mode = ssl.CERT_REQUIRED  # the master authenticates nodes by certificate
    server = RecordingServer(ssl_context=context)
    server.routes["getFullComputerInformation"] = Answer(200, COMPUTER_DOC)
    return server


def _certified_client(url: str, pki: dict[str, Path], ca: str) -> SlapClient:
    """A client with its certificate, trusting the masters `pki[ca]` signed."""
    return SlapClient(
        url, "COMP-1234", key_file=pki["client_key"], cert_file=pki["client_cert"], ca_file=pki[ca]
    )


def test_tls_with_client_certificate_and_verified_master(pki: dict[str, Path]) -> None:
    with _tls_server(pki) as server, _certified_client(server.url, pki, "ca") as client:
        assert client.computer().computer_id == "COMP-1234"


def test_tls_master_with_untrusted_certificate_is_refused(pki: dict[str, Path]) -> None:
    with (
        _tls_server(pki) as server,
        _certified_client(server.url, pki, "other_ca") as client,
        pytest.raises(ConnectionError),
    ):
        client.computer()


def test_tls_without_client_certificate_is_refused_by_the_master(pki: dict[str, Path]) -> None:
    with _tls_server(pki) as server:
        client = SlapClient(server.url, "COMP-1234", ca_file=pki["ca"])
        with client, pytest.raises(ConnectionError):
            client.computer()


def test_tls_without_ca_file_does_not_verify_like_the_reference(pki: dict[str, Path]) -> None:
    with _tls_server(pki) as server:
        client = SlapClient(
            server.url, "COMP-1234", key_file=pki["client_key"], cert_file=pki["client_cert"]
        )
        with client:
            assert client.computer().computer_id == "COMP-1234"
