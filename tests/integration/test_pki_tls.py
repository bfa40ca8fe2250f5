"""TLS on 127.0.0.1 with the master's certificates, as the master serves it.

The server uses the master's server certificate and refuses a client certificate not from
its CA; the identity it reads is the one `identity_from_peercert` gets from `ssl`.
"""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from pathlib import Path

import pytest

from slapgrid.master.pki.authority import Authority, cert_pem
from slapgrid.master.pki.identity import Identity, IdentityError, identity_from_peercert

pytestmark = pytest.mark.integration


def client_context(ca_file: Path, key: bytes, cert: bytes, tmp_path: Path) -> ssl.SSLContext:
    (tmp_path / "client.key").write_bytes(key)
    (tmp_path / "client.pem").write_bytes(cert)
    context = ssl.create_default_context(cafile=str(ca_file))
    context.load_cert_chain(tmp_path / "client.pem", tmp_path / "client.key")
    return context


def handshake(
    server: ssl.SSLContext,
    client: ssl.SSLContext,
    sessions: list[ssl.SSLSession | None] | None = None,
) -> object:
    """What the server side ended with: the client's Identity, or the exception. The
    client's TLS session, once it read the answer, is added to `sessions`."""
    outcome: list[object] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            connection, _ = listener.accept()
            try:
                with server.wrap_socket(connection, server_side=True) as tls:
                    outcome.append(identity_from_peercert(tls.getpeercert()))
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError, IdentityError) as exc:
                outcome.append(exc)
                connection.close()

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                client.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
            ):
                tls.recv(2)
                if sessions is not None:
                    sessions.append(tls.session)
        except (ssl.SSLError, OSError):
            pass  # TLS 1.3: the client learns of the refusal after its own handshake
        thread.join(10)
    return outcome[0]


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return Authority.open(tmp_path / "pki")


def test_a_computer_certificate_is_accepted_and_read_back(ca: Authority, tmp_path: Path) -> None:
    key, cert = ca.issue_key_pair(Identity.for_computer("COMP-1"))
    client = client_context(ca.ca_file, key, cert_pem(cert), tmp_path)
    assert handshake(ca.server_context(["127.0.0.1"]), client) == Identity.for_computer("COMP-1")


def test_a_partition_certificate_is_read_back_as_that_partition(
    ca: Authority, tmp_path: Path
) -> None:
    identity = Identity.for_partition("COMP-1", "slappart2")
    key, cert = ca.issue_key_pair(identity)
    client = client_context(ca.ca_file, key, cert_pem(cert), tmp_path)
    assert handshake(ca.server_context(), client) == identity


def test_a_certificate_of_another_ca_is_refused(ca: Authority, tmp_path: Path) -> None:
    other = Authority.open(tmp_path / "other")
    key, cert = other.issue_key_pair(Identity.for_computer("COMP-1"))
    client = client_context(ca.ca_file, key, cert_pem(cert), tmp_path)
    outcome = handshake(ca.server_context(), client)
    assert isinstance(outcome, ssl.SSLError), outcome
    assert "certificate verify failed" in str(outcome)


def test_an_expired_certificate_is_refused(ca: Authority, tmp_path: Path) -> None:
    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=11 * 365)
    past = Authority.open(ca.directory, clock=lambda: long_ago)  # the same CA, years ago
    key, cert = past.issue_key_pair(Identity.for_computer("COMP-1"))
    client = client_context(ca.ca_file, key, cert_pem(cert), tmp_path)
    outcome = handshake(ca.server_context(), client)
    assert isinstance(outcome, ssl.SSLError), outcome
    assert "expired" in str(outcome)


def test_no_client_certificate_is_no_identity(ca: Authority) -> None:
    """Anonymous TLS gets through (a node redeeming its token has no certificate yet), and
    names nobody."""
    client = ssl.create_default_context(cafile=str(ca.ca_file))
    outcome = handshake(ca.server_context(), client)
    assert isinstance(outcome, IdentityError), outcome


def test_the_client_verifies_the_master_by_its_ca(ca: Authority, tmp_path: Path) -> None:
    other = Authority.open(tmp_path / "other")
    key, cert = ca.issue_key_pair(Identity.for_computer("COMP-1"))
    client = client_context(other.ca_file, key, cert_pem(cert), tmp_path)  # trusts another CA
    outcome = handshake(ca.server_context(), client)
    assert isinstance(outcome, ssl.SSLError | OSError), outcome


def test_the_master_issues_no_session_tickets(ca: Authority, tmp_path: Path) -> None:
    """No client of a master resumes a session: a ticket would only cost each handshake."""
    key, cert = ca.issue_key_pair(Identity.for_computer("COMP-1"))
    client = client_context(ca.ca_file, key, cert_pem(cert), tmp_path)
    sessions: list[ssl.SSLSession | None] = []
    assert handshake(ca.server_context(), client, sessions) == Identity.for_computer("COMP-1")
    [session] = sessions
    assert session is not None and not session.has_ticket
