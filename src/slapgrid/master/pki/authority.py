"""The master's CA: created at first start in its PKI directory, then only read.

    ca.key / ca.pem                   the CA (EC P-256, self-signed, 30 years); never replaced
    server.key / server.pem           the master's TLS certificate, for the hosts it listens
                                      on plus localhost, 127.0.0.1 and ::1; re-issued (it is
                                      derived material) when it no longer covers them
    partition-keys.secret             32 random bytes partition keys are derived from

Keys are 0600 in a 0700 directory, written whole by `files`. A partition's key is derived
from the secret, the partition and the instance it holds, so the master hands the same key
out again without keeping private keys in its database (which tenants' users may read).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import socket
import ssl
from collections.abc import Callable, Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from slapgrid.master.pki import files
from slapgrid.master.pki.files import KEY_MODE, PUBLIC_MODE, CredentialError
from slapgrid.master.pki.identity import AUTHORITY, SERVER, Identity, identity_from_certificate

CA_KEY, CA_CERT = "ca.key", "ca.pem"
SERVER_KEY, SERVER_CERT = "server.key", "server.pem"
PARTITION_SECRET = "partition-keys.secret"
LOCK = ".lock"
DAY = datetime.timedelta(days=1)
CA_VALIDITY, CLIENT_VALIDITY, SERVER_VALIDITY = 30 * 365 * DAY, 10 * 365 * DAY, 2 * 365 * DAY
SKEW = datetime.timedelta(minutes=5)  # a peer's clock a little behind still accepts a new cert
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

Clock = Callable[[], datetime.datetime]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _name(kind: str, common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, kind)]
            ),
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]),
        ]
    )


def _san(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(host.strip("[]") for host in hosts if host):
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            names.append(x509.DNSName(host))
            continue
        if address.is_unspecified:  # listening everywhere: the machine's name too
            names.append(x509.DNSName(socket.gethostname()))
        else:
            names.append(x509.IPAddress(address))
    return list(dict.fromkeys(names))


class Authority:
    """The master's CA: issues certificates whose subject is an `Identity`."""

    def __init__(
        self,
        directory: Path,
        key: PrivateKey,
        certificate: x509.Certificate,
        secret: bytes,
        clock: Clock = utc_now,
    ) -> None:
        self.directory = directory
        self._key = key
        self.certificate = certificate
        self._secret = secret
        self.clock = clock

    # --- opening ------------------------------------------------------------------------

    @classmethod
    def open(cls, directory: Path, *, create: bool = True, clock: Clock = utc_now) -> Authority:
        """The CA in `directory`, created there first when `create` and nothing is there."""
        directory = Path(directory)
        key_path, cert_path = directory / CA_KEY, directory / CA_CERT
        secret_path = directory / PARTITION_SECRET
        if create:
            files.make_private_dir(directory)
            with files.locked(directory / LOCK):  # two masters starting: one CA, made once
                if not key_path.exists() and not cert_path.exists():
                    key = new_key()
                    files.create_exclusive(key_path, key_pem(key), KEY_MODE)
                    certificate = _self_signed(key, clock())
                    files.create_exclusive(cert_path, cert_pem(certificate), PUBLIC_MODE)
                if not secret_path.exists():
                    files.create_exclusive(secret_path, secrets.token_bytes(32), KEY_MODE)
        elif not directory.is_dir():
            raise CredentialError(f"no master PKI directory at {directory}")
        key = _load_key(key_path)
        certificate = load_certificate(cert_path)
        if certificate.public_key().public_numbers() != key.public_key().public_numbers():
            raise CredentialError(f"{cert_path} is not the certificate of {key_path}")
        secret = files.read(secret_path)
        if len(secret) < 32:
            raise CredentialError(f"corrupt {secret_path}: fewer than 32 bytes")
        return cls(directory, key, certificate, secret, clock)

    @property
    def ca_pem(self) -> bytes:
        return cert_pem(self.certificate)

    @property
    def ca_file(self) -> Path:
        return self.directory / CA_CERT

    # --- issuing ------------------------------------------------------------------------

    def issue(
        self,
        identity: Identity,
        public_key: PublicKey,
        validity: datetime.timedelta = CLIENT_VALIDITY,
    ) -> x509.Certificate:
        """A client certificate for `identity`'s key, signed by the CA."""
        return self._sign(
            identity.subject(), public_key, validity, ExtendedKeyUsageOID.CLIENT_AUTH, []
        )

    def issue_key_pair(self, identity: Identity) -> tuple[bytes, x509.Certificate]:
        """A new key (PEM) and its certificate: for `computer add` and `user add`."""
        key = new_key()
        return key_pem(key), self.issue(identity, key.public_key())

    def sign_request(self, identity: Identity, request_pem: bytes) -> x509.Certificate:
        """A certificate for the key of a CSR; its subject is `identity`'s, not the CSR's."""
        try:
            request = x509.load_pem_x509_csr(request_pem)
        except ValueError:
            raise CredentialError("the certificate request is not a PEM CSR") from None
        if not request.is_signature_valid:
            raise CredentialError("the certificate request's signature is invalid")
        public_key = request.public_key()
        if isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size >= 2048:
            return self.issue(identity, public_key)
        if isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.key_size >= 256:
            return self.issue(identity, public_key)
        raise CredentialError("the certificate request's key is not EC (256+) or RSA (2048+)")

    def partition_key(self, identity: Identity, instance: str) -> ec.EllipticCurvePrivateKey:
        """The partition's key while it holds `instance`: the same every time it is asked."""
        info = "\0".join(
            ("slapgrid partition key", str(identity.computer), str(identity.partition), instance)
        ).encode()
        material = HKDF(hashes.SHA256(), 48, salt=None, info=info).derive(self._secret)
        value = int.from_bytes(material, "big") % (_P256_ORDER - 1) + 1
        return ec.derive_private_key(value, ec.SECP256R1())

    def identity_of(self, certificate: x509.Certificate | bytes) -> Identity:
        """Who a certificate names, once checked against this CA and the clock."""
        return identity_from_certificate(certificate, self.certificate, self.clock())

    # --- the server ---------------------------------------------------------------------

    def server_files(self, hosts: Iterable[str] = ()) -> tuple[Path, Path]:
        """(certificate, key) for TLS on `hosts`: kept while it covers them and is valid."""
        key_path, cert_path = self.directory / SERVER_KEY, self.directory / SERVER_CERT
        wanted = _san([*hosts, *LOCAL_HOSTS])
        with files.locked(self.directory / LOCK):
            if not self._server_fits(key_path, cert_path, wanted):
                self._issue_server(key_path, cert_path, wanted)
        return cert_path, key_path

    def _issue_server(self, key_path: Path, cert_path: Path, names: list[x509.GeneralName]) -> None:
        key = new_key()
        subject = _name(SERVER, str(names[0].value))
        usage = ExtendedKeyUsageOID.SERVER_AUTH
        certificate = self._sign(subject, key.public_key(), SERVER_VALIDITY, usage, names)
        files.replace(key_path, key_pem(key), KEY_MODE)
        files.replace(cert_path, cert_pem(certificate) + self.ca_pem, PUBLIC_MODE)

    def server_context(self, hosts: Iterable[str] = ()) -> ssl.SSLContext:
        """TLS for the master: its certificate; a client certificate, if sent, must be from
        this CA and valid. Without one a caller is anonymous: it may only redeem a
        registration token (`access`)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(*self.server_files(hosts))
        context.load_verify_locations(cadata=self.ca_pem.decode())
        context.verify_mode = ssl.CERT_OPTIONAL
        # No TLS 1.3 session tickets: no client of a master resumes a session (ours and the
        # reference's open each connection afresh and keep it), and issuing the default two
        # after every handshake was about 40 % of its CPU here (OpenSSL 3.0).
        context.num_tickets = 0
        return context

    def _server_fits(self, key_path: Path, cert_path: Path, wanted: list[x509.GeneralName]) -> bool:
        if not key_path.exists() or not cert_path.exists():
            return False
        try:
            certificate = load_certificate(cert_path)
            key = _load_key(key_path)
            names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            certificate.verify_directly_issued_by(self.certificate)
        except Exception:  # unreadable, foreign or half-replaced: derived, so made again
            return False
        return (
            certificate.public_key().public_numbers() == key.public_key().public_numbers()
            and set(wanted) <= set(names.value)
            and certificate.not_valid_after_utc - self.clock() > 30 * DAY
        )

    def _sign(
        self,
        subject: x509.Name,
        public_key: PublicKey,
        validity: datetime.timedelta,
        usage: x509.ObjectIdentifier,
        names: list[x509.GeneralName],
    ) -> x509.Certificate:
        now = self.clock()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - SKEW)
            .not_valid_after(now + validity)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(self._key, hashes.SHA256())


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _self_signed(key: ec.EllipticCurvePrivateKey, now: datetime.datetime) -> x509.Certificate:
    name = _name(AUTHORITY, f"slapgrid master CA {secrets.token_hex(4)}")
    public_key = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - SKEW)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
        .sign(key, hashes.SHA256())
    )


def load_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(files.read(path))
    except ValueError:
        raise CredentialError(f"corrupt certificate {path}") from None


def _load_key(path: Path) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(files.read(path), password=None)
    except (ValueError, TypeError):
        raise CredentialError(f"corrupt or encrypted private key {path}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CredentialError(f"{path}: not an EC or RSA key")
    if os.stat(path).st_mode & 0o077:
        raise CredentialError(f"{path} is readable by others: chmod 600 it")
    return key
