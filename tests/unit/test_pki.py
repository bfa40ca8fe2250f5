"""The master's CA: identities read back from the certificates it issues, and its files."""

from __future__ import annotations

import datetime
import os
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from slapgrid.master.pki.authority import Authority, new_key
from slapgrid.master.pki.files import CredentialError
from slapgrid.master.pki.identity import (
    Identity,
    IdentityError,
    identity_from_certificate,
    identity_from_peercert,
)

T0 = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ca(tmp_path: Path, clock: Clock) -> Authority:
    return Authority.open(tmp_path / "pki", clock=clock)


IDENTITIES = [
    Identity.for_computer("COMP-1"),
    Identity.for_partition("COMP-1", "slappart0"),
    Identity.for_user("alice"),
    Identity.for_computer("slappart0"),  # a computer named like a partition stays a computer
    Identity.for_partition("COMP=1,OU=user", "CN=x"),  # separators are values, not syntax
    Identity.for_user("é ü 名前"),
]


def peercert(cert: x509.Certificate) -> dict[str, object]:
    """The subject as `ssl.SSLObject.getpeercert()` gives it."""
    names = {
        NameOID.ORGANIZATIONAL_UNIT_NAME: "organizationalUnitName",
        NameOID.ORGANIZATION_NAME: "organizationName",
        NameOID.COMMON_NAME: "commonName",
    }
    subject = tuple(tuple((names[a.oid], a.value) for a in rdn) for rdn in cert.subject.rdns)
    return {"subject": subject}


@pytest.mark.parametrize("identity", IDENTITIES, ids=str)
def test_identity_round_trip(ca: Authority, identity: Identity) -> None:
    key_pem, cert = ca.issue_key_pair(identity)
    assert ca.identity_of(cert) == identity
    der = cert.public_bytes(serialization.Encoding.DER)
    assert identity_from_certificate(der, ca.certificate, T0) == identity
    assert identity_from_peercert(peercert(cert)) == identity
    key = serialization.load_pem_private_key(key_pem, None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()


def test_partition_identity_fields() -> None:
    identity = Identity.for_partition("COMP-1", "slappart3")
    assert (identity.kind, identity.computer, identity.partition, identity.user) == (
        "partition",
        "COMP-1",
        "slappart3",
        None,
    )


def test_another_ca_is_refused(ca: Authority, tmp_path: Path, clock: Clock) -> None:
    other = Authority.open(tmp_path / "other", clock=clock)
    _, cert = other.issue_key_pair(Identity.for_computer("COMP-1"))
    with pytest.raises(IdentityError, match="not issued by this master's CA"):
        ca.identity_of(cert)


def test_expired_and_not_yet_valid_are_refused(ca: Authority, clock: Clock) -> None:
    _, cert = ca.issue_key_pair(Identity.for_computer("COMP-1"))
    clock.now = T0 + datetime.timedelta(days=11 * 365)
    with pytest.raises(IdentityError, match="not valid now"):
        ca.identity_of(cert)
    clock.now = T0 - datetime.timedelta(hours=1)
    with pytest.raises(IdentityError, match="not valid now"):
        ca.identity_of(cert)


def test_server_and_ca_certificates_are_no_identity(ca: Authority) -> None:
    cert_path, _ = ca.server_files(["192.0.2.7"])
    server = x509.load_pem_x509_certificate(cert_path.read_bytes())
    with pytest.raises(IdentityError, match="not for client authentication"):
        ca.identity_of(server)
    with pytest.raises(IdentityError, match="kind 'server'"):
        identity_from_peercert(peercert(server))
    with pytest.raises(IdentityError):
        ca.identity_of(ca.certificate)


@pytest.mark.parametrize(
    ("subject", "match"),
    [
        ((), "no verified client certificate"),
        (((("commonName", "COMP-1"),),), "kind None"),
        (((("organizationalUnitName", "robot"),), (("commonName", "x"),)), "kind 'robot'"),
        (
            (
                (("organizationalUnitName", "computer"),),
                (("organizationName", "C"),),
                (("commonName", "x"),),
            ),
            "other attributes",
        ),
        (((("organizationalUnitName", "partition"),), (("commonName", "slappart0"),)), "other"),
        (
            ((("organizationalUnitName", "user"),), (("commonName", "a"),), (("commonName", "b"),)),
            "repeats commonName",
        ),
        (
            ((("organizationalUnitName", "user"), ("commonName", "a")),),
            "multi-valued",
        ),
        (((("organizationalUnitName", "user"),), (("commonName", "a\nb"),)), "control"),
    ],
)
def test_peercert_refusals(subject: tuple[object, ...], match: str) -> None:
    with pytest.raises(IdentityError, match=match):
        identity_from_peercert({"subject": subject} if subject else {})


def test_a_certificate_with_a_foreign_subject_is_refused(ca: Authority) -> None:
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.EMAIL_ADDRESS, "x@example.com")])
    cert = ca._sign(
        name,
        key.public_key(),
        datetime.timedelta(days=1),
        x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH,
        [],
    )
    with pytest.raises(IdentityError, match="attribute"):
        ca.identity_of(cert)


@pytest.mark.parametrize("name", ["", " x", "a" * 65, "a\x00b", "tab\there"])
def test_names_a_subject_cannot_hold_are_refused(name: str) -> None:
    with pytest.raises(CredentialError):
        Identity.for_computer(name)


def test_files_are_created_once_with_private_modes(tmp_path: Path, clock: Clock) -> None:
    directory = tmp_path / "pki"
    first = Authority.open(directory, clock=clock)
    cert_path, key_path = first.server_files(["master.example"])
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for name in ("ca.key", "server.key", "partition-keys.secret"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE((directory / "ca.pem").stat().st_mode) == 0o644
    assert not [p for p in directory.iterdir() if p.name.startswith(".tmp")]
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    again = Authority.open(directory, clock=clock)
    assert again.certificate == first.certificate
    assert again.server_files(["master.example"]) == (cert_path, key_path)
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before


def test_server_certificate_covers_its_hosts_and_follows_a_new_one(ca: Authority) -> None:
    cert_path, _ = ca.server_files(["192.0.2.7"])
    names = x509.load_pem_x509_certificate(cert_path.read_bytes()).extensions
    san = names.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(map(str, san.get_values_for_type(x509.IPAddress))) == {
        "192.0.2.7",
        "127.0.0.1",
        "::1",
    }
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    ca_before = (ca.directory / "ca.pem").read_bytes()
    ca.server_files(["master.example"])
    san = (
        x509.load_pem_x509_certificate(cert_path.read_bytes())
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value
    )
    assert "master.example" in san.get_values_for_type(x509.DNSName)
    assert (ca.directory / "ca.pem").read_bytes() == ca_before  # the CA is never replaced


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "ca.pem").unlink(), "missing credential file .*ca.pem"),
        (lambda d: (d / "ca.key").unlink(), "missing credential file .*ca.key"),
        (lambda d: (d / "ca.pem").write_text("garbage"), "corrupt certificate .*ca.pem"),
        (lambda d: (d / "ca.key").write_text("garbage"), "corrupt or encrypted private key"),
        (lambda d: (d / "ca.key").chmod(0o644), "readable by others"),
        (lambda d: (d / "partition-keys.secret").write_bytes(b"x"), "fewer than 32 bytes"),
    ],
)
def test_a_damaged_directory_is_one_clear_line_and_never_replaced(
    tmp_path: Path, damage: object, message: str
) -> None:
    directory = tmp_path / "pki"
    Authority.open(directory)
    damage(directory)  # type: ignore[operator]
    left = {p.name: p.read_bytes() for p in directory.iterdir()}
    with pytest.raises(CredentialError, match=message) as caught:
        Authority.open(directory)
    assert "\n" not in str(caught.value)
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == left


def test_a_key_from_another_ca_is_refused(tmp_path: Path) -> None:
    Authority.open(tmp_path / "a")
    Authority.open(tmp_path / "b")
    os.replace(tmp_path / "b" / "ca.pem", tmp_path / "a" / "ca.pem")
    with pytest.raises(CredentialError, match="is not the certificate of"):
        Authority.open(tmp_path / "a")


def test_no_directory_without_create(tmp_path: Path) -> None:
    with pytest.raises(CredentialError, match="no master PKI directory"):
        Authority.open(tmp_path / "absent", create=False)


def test_csr_key_is_certified_under_the_masters_subject(ca: Authority) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin")]))
        .sign(key, hashes.SHA256())
    )
    pem = request.public_bytes(serialization.Encoding.PEM)
    cert = ca.sign_request(Identity.for_computer("COMP-9"), pem)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert ca.identity_of(cert) == Identity.for_computer("COMP-9")  # not the CSR's subject
    with pytest.raises(CredentialError, match="not a PEM CSR"):
        ca.sign_request(Identity.for_computer("COMP-9"), b"junk")


def test_partition_keys_are_derived_per_partition_and_instance(ca: Authority) -> None:
    p0, p1 = Identity.for_partition("C", "slappart0"), Identity.for_partition("C", "slappart1")
    numbers = lambda i, g: ca.partition_key(i, g).private_numbers().private_value  # noqa: E731
    assert numbers(p0, "SOFTINST-1") == numbers(p0, "SOFTINST-1")
    assert numbers(p0, "SOFTINST-1") != numbers(p0, "SOFTINST-2")
    assert numbers(p0, "SOFTINST-1") != numbers(p1, "SOFTINST-1")


def test_masters_starting_together_make_one_ca(tmp_path: Path) -> None:
    directory, opened = tmp_path / "pki", []
    threads = [
        threading.Thread(target=lambda: opened.append(Authority.open(directory))) for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(opened) == 6
    assert len({authority.certificate for authority in opened}) == 1
