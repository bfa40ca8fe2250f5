"""Who a certificate's holder is: a computer, a partition or a user, encoded in its subject.

Every certificate the master issues has a subject of separate single-attribute RDNs:

    computer   OU=computer,  CN=<computer id>
    partition  OU=partition, O=<computer id>, CN=<partition id>
    user       OU=user,      CN=<user name>

`OU` says the kind, and each kind has exactly its attributes, each once, so a subject reads
back one way only (a computer called `slappart0` is never the partition `slappart0`). The
server's own certificate (`OU=server`) and the CA (`OU=authority`) are no identity.
Authorization (the next step) reads an `Identity` from the verified peer certificate with
`identity_from_peercert` and never from a parameter or a header.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from slapgrid.master.pki.files import CredentialError

COMPUTER, PARTITION, USER = "computer", "partition", "user"
SERVER, AUTHORITY = "server", "authority"
KINDS = (COMPUTER, PARTITION, USER)
MAX_NAME = 64  # X.509's upper bound for a common name

# the attributes each kind has, besides OU (getpeercert()'s names for them)
_ATTRIBUTES = {
    COMPUTER: {"commonName"},
    PARTITION: {"commonName", "organizationName"},
    USER: {"commonName"},
}
_OIDS = {
    "organizationalUnitName": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "organizationName": NameOID.ORGANIZATION_NAME,
    "commonName": NameOID.COMMON_NAME,
}


class IdentityError(CredentialError):
    """A certificate that names no identity this master issued (refused: 403)."""


@dataclass(frozen=True)
class Identity:
    """A certificate's holder; `computer` is set for computers and partitions."""

    kind: str
    computer: str | None = None
    partition: str | None = None
    user: str | None = None

    @classmethod
    def for_computer(cls, computer: str) -> Identity:
        return cls(COMPUTER, computer=check_name(computer, "computer id"))

    @classmethod
    def for_partition(cls, computer: str, partition: str) -> Identity:
        check_name(computer, "computer id")
        return cls(PARTITION, computer=computer, partition=check_name(partition, "partition id"))

    @classmethod
    def for_user(cls, user: str) -> Identity:
        return cls(USER, user=check_name(user, "user name"))

    def __str__(self) -> str:
        if self.kind == PARTITION:
            return f"partition {self.partition} of computer {self.computer}"
        return f"{self.kind} {self.user if self.kind == USER else self.computer}"

    def subject(self) -> x509.Name:
        """The subject the master writes into this identity's certificate."""
        values = {"organizationalUnitName": self.kind}
        if self.kind == PARTITION:
            values |= {"organizationName": self.computer, "commonName": self.partition}
        else:
            values["commonName"] = self.user if self.kind == USER else self.computer
        return x509.Name(
            [
                x509.RelativeDistinguishedName([x509.NameAttribute(_OIDS[k], v)])
                for k, v in values.items()
            ]
        )


def check_name(value: str, what: str) -> str:
    """A name fit for a subject: 1 to 64 printable characters, no surrounding space."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME:
        raise CredentialError(f"a {what} has 1 to {MAX_NAME} characters")
    if not value.isprintable() or value != value.strip():
        raise CredentialError(f"{what} {value!r} has control characters or surrounding spaces")
    return value


def _identity(attributes: Mapping[str, str]) -> Identity:
    kind = attributes.get("organizationalUnitName")
    if kind not in KINDS:
        raise IdentityError(f"certificate of kind {kind!r}: not a computer, partition or user")
    if set(attributes) - {"organizationalUnitName"} != _ATTRIBUTES[kind]:
        raise IdentityError(f"certificate subject with other attributes than a {kind}'s")
    name = attributes["commonName"]
    try:
        if kind == COMPUTER:
            return Identity.for_computer(name)
        if kind == USER:
            return Identity.for_user(name)
        return Identity.for_partition(attributes["organizationName"], name)
    except CredentialError as exc:
        raise IdentityError(f"certificate subject: {exc}") from None


def _flat(pairs: list[tuple[str, str]]) -> dict[str, str]:
    attributes: dict[str, str] = {}
    for name, value in pairs:
        if name in attributes:
            raise IdentityError(f"certificate subject repeats {name}")
        attributes[name] = value
    return attributes


def identity_from_peercert(peercert: Mapping[str, Any] | None) -> Identity:
    """The identity of a peer `ssl` verified, from `SSLObject.getpeercert()`'s dictionary.

    The TLS layer has checked the chain to our CA and the dates; this reads the subject and
    refuses a certificate that is not for a client (the server's own, say).
    """
    if not peercert or "subject" not in peercert:
        raise IdentityError("no verified client certificate")
    pairs = []
    for rdn in peercert["subject"]:
        if len(rdn) != 1:
            raise IdentityError("certificate subject with a multi-valued attribute")
        pairs.append(tuple(rdn[0]))
    return _identity(_flat(pairs))


def identity_from_certificate(
    certificate: x509.Certificate | bytes,
    ca: x509.Certificate,
    now: datetime.datetime | None = None,
) -> Identity:
    """The identity of a certificate (object, DER or PEM) after checking it as TLS would:

    signed by `ca`, valid `now`, for client authentication, not a CA.
    """
    cert = _load(certificate)
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        raise IdentityError("certificate not issued by this master's CA") from None
    now = now or datetime.datetime.now(datetime.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise IdentityError(
            f"certificate not valid now (until {cert.not_valid_after_utc:%Y-%m-%d})"
        )
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise IdentityError("certificate without the extensions the master writes") from None
    if constraints.ca or ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
        raise IdentityError("certificate not for client authentication")
    pairs = []
    for rdn in cert.subject.rdns:
        if len(rdn) != 1:
            raise IdentityError("certificate subject with a multi-valued attribute")
        attribute = next(iter(rdn))
        names = {oid: name for name, oid in _OIDS.items()}
        if attribute.oid not in names:
            raise IdentityError(f"certificate subject with attribute {attribute.oid.dotted_string}")
        pairs.append((names[attribute.oid], str(attribute.value)))
    return _identity(_flat(pairs))


def _load(certificate: x509.Certificate | bytes) -> x509.Certificate:
    if isinstance(certificate, x509.Certificate):
        return certificate
    try:
        if certificate.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(certificate)
        return x509.load_der_x509_certificate(certificate)
    except ValueError:
        raise IdentityError("not a certificate") from None
