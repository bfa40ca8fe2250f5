"""Credentials the master hands out: client certificates, one-time tokens, partition keys.

Decisions over the store and the CA (`pki.authority`); the CLI and the endpoints call these.
A registration token is 32 random bytes shown once; the database keeps its SHA-256, its
computer and its expiry, and redeeming it is one transaction: a token unknown, used,
expired or for another computer is refused (403) and nothing changes.
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from sqlalchemy import select
from sqlalchemy.orm import Session

from slapgrid.master import lookups
from slapgrid.master.errors import BadRequest, Conflict, Forbidden, NotFound
from slapgrid.master.pki import files
from slapgrid.master.pki.authority import Authority, cert_pem, key_pem
from slapgrid.master.pki.files import KEY_MODE, PUBLIC_MODE, CredentialError
from slapgrid.master.pki.identity import PARTITION, Identity
from slapgrid.master.stamps import now_us
from slapgrid.master.storage import MasterStore
from slapgrid.master.tables import CredentialRow, TokenRow

TOKEN_TTL = datetime.timedelta(hours=24)
RENEW_BEFORE = datetime.timedelta(days=30)  # a partition's certificate is re-issued then
KEY_FILE, CERT_FILE, CA_FILE = "key.pem", "cert.pem", "ca.pem"


@dataclass(frozen=True)
class Issued:
    """What a client receives: its key (empty when it sent a CSR), certificate and the CA."""

    key: bytes
    certificate: bytes
    ca: bytes


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _us(moment: datetime.datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def _record(
    session: Session, identity: Identity, cert: x509.Certificate, instance: str | None
) -> None:
    session.add(
        CredentialRow(
            serial=f"{cert.serial_number:x}",
            kind=identity.kind,
            computer=identity.computer,
            partition=identity.partition,
            user=identity.user,
            instance=instance,
            certificate=cert_pem(cert).decode(),
            issued_at=now_us(),
            not_after=_us(cert.not_valid_after_utc),
        )
    )


def _identity(make: Callable[..., Identity], *names: str) -> Identity:
    try:
        return make(*names)
    except CredentialError as exc:
        raise BadRequest(str(exc)) from None


# --- tokens --------------------------------------------------------------------------------


def create_token(
    store: MasterStore,
    computer: str,
    *,
    ttl: datetime.timedelta = TOKEN_TTL,
    now: int | None = None,
) -> str:
    """A new one-time token for `computer`'s registration; only its digest is stored."""
    _identity(Identity.for_computer, computer)
    token = secrets.token_urlsafe(32)
    created = now_us() if now is None else now
    row = TokenRow(
        digest=_digest(token),
        computer=computer,
        created_at=created,
        expires_at=created + int(ttl.total_seconds() * 1_000_000),
    )
    store.write_with(lambda session: session.add(row))
    return token


def redeem_token(
    store: MasterStore,
    authority: Authority,
    token: str,
    computer: str,
    request_pem: bytes | None = None,
    *,
    now: int | None = None,
) -> Issued:
    """The computer's certificate (for the CSR's key, or with a new key) for a valid token."""
    identity = _identity(Identity.for_computer, computer)
    try:  # before the token is spent: a bad CSR leaves it usable
        if request_pem is None:
            key, cert = authority.issue_key_pair(identity)
        else:
            key, cert = b"", authority.sign_request(identity, request_pem)
    except CredentialError as exc:
        raise BadRequest(str(exc)) from None
    moment = now_us() if now is None else now

    def spend(session: Session) -> None:
        row = session.get(TokenRow, _digest(token)) if token else None
        spent = row is None or row.used_at is not None or row.expires_at <= moment
        if spent or row.computer != computer:  # one answer: nothing learnt by guessing
            raise Forbidden("registration token unknown, used or expired")
        row.used_at = moment
        _record(session, identity, cert, None)

    store.write_with(spend)
    return Issued(key, cert_pem(cert), authority.ca_pem)


# --- certificates made on the master's machine ---------------------------------------------


def issue_client(store: MasterStore, authority: Authority, identity: Identity) -> Issued:
    """A new key and certificate for a computer or a user (`master computer|user add`)."""
    key, cert = authority.issue_key_pair(identity)
    store.write_with(lambda session: _record(session, identity, cert, None))
    return Issued(key, cert_pem(cert), authority.ca_pem)


def partition_certificate(
    store: MasterStore, authority: Authority, computer: str, partition: str
) -> dict[str, str]:
    """getComputerPartitionCertificate: the same pair on every call while the partition
    holds the same instance (the agent rewrites its files when they change)."""

    def current(session: Session) -> tuple[str, str | None]:
        row = lookups.busy_row(session, computer, partition)
        query = (
            select(CredentialRow.certificate)
            .where(CredentialRow.kind == PARTITION, CredentialRow.computer == computer)
            .where(CredentialRow.partition == partition, CredentialRow.instance == row.guid)
            .where(CredentialRow.not_after > _us(authority.clock() + RENEW_BEFORE))
            .order_by(CredentialRow.issued_at.desc())
        )
        return str(row.guid), session.scalars(query).first()

    instance, pem = store.read_with(current)
    identity = _identity(Identity.for_partition, computer, partition)
    key = authority.partition_key(identity, instance)
    if pem is None:

        def issue(session: Session) -> str:
            guid, found = current(session)  # again, under the write lock
            if guid != instance:
                raise Conflict("the partition changed instance meanwhile: ask again")
            if found is not None:
                return found
            cert = authority.issue(identity, key.public_key())
            _record(session, identity, cert, instance)
            return cert_pem(cert).decode()

        pem = store.write_with(issue)
    return {"certificate": pem, "key": key_pem(key).decode()}


def check_partition_serial(store: MasterStore, identity: Identity, serial: str | None) -> None:
    """A partition's certificate acts for it only while it holds the instance the
    certificate was issued for: once the partition is freed or given to another instance,
    its former tenant's certificate is refused (403), though valid for years still."""

    def current(session: Session) -> bool:
        try:
            number = f"{int(serial or '', 16):x}"
        except ValueError:
            return False
        row = session.get(CredentialRow, number)
        if row is None or (row.kind, row.computer, row.partition) != (
            PARTITION,
            identity.computer,
            identity.partition,
        ):
            return False
        try:
            partition = lookups.partition_row(session, row.computer or "", row.partition or "")
        except NotFound:
            return False
        return partition.guid is not None and partition.guid == row.instance

    if not store.read_with(current):
        raise Forbidden(f"the certificate of {identity} is not for the instance it holds now")


# --- files a client receives ---------------------------------------------------------------


def write_client_files(out: Path, issued: Issued) -> tuple[Path, Path, Path]:
    """`out/key.pem` (0600), `cert.pem` and `ca.pem`; refused if any exists (never replaced)."""
    out = files.make_private_dir(Path(out).expanduser().resolve())
    paths = out / KEY_FILE, out / CERT_FILE, out / CA_FILE
    existing = [str(path) for path in paths if path.exists()]
    if existing:
        raise CredentialError(f"{existing[0]} exists: not replaced (choose another --out)")
    written = []
    for path, data, mode in zip(
        paths,
        (issued.key, issued.certificate, issued.ca),
        (KEY_MODE, PUBLIC_MODE, PUBLIC_MODE),
        strict=True,
    ):
        if data and not files.create_exclusive(path, data, mode):
            raise CredentialError(f"{path} exists: not replaced (choose another --out)")
        written.append(path)
    return written[0], written[1], written[2]


def node_config_lines(computer: str, paths: tuple[Path, Path, Path]) -> str:
    """The `[slapos]` lines a node's slapos.cfg needs to use these files."""
    key, cert, ca = paths
    return (
        f"[slapos]\ncomputer_id = {computer}\nkey_file = {key}\ncert_file = {cert}\n"
        f"master_ca_file = {ca}\n"
    )


def user_config_lines(paths: tuple[Path, Path, Path]) -> str:
    """The `[slapconsole]` lines a user's configuration needs (`supply`, `request`, `show`)."""
    key, cert, ca = paths
    return f"[slapconsole]\nkey_file = {key}\ncert_file = {cert}\nmaster_ca_file = {ca}\n"


class MasterCredentials:
    """The master's store and CA, opened by the credential commands on its machine."""

    def __init__(self, store: MasterStore, authority: Authority) -> None:
        self.store = store
        self.authority = authority

    @classmethod
    def open(cls, database: str | Path, pki_dir: str | Path) -> MasterCredentials:
        authority = Authority.open(Path(pki_dir))
        return cls(MasterStore(database), authority)

    def __enter__(self) -> MasterCredentials:
        return self

    def __exit__(self, *_: object) -> None:
        self.store.close()

    def add_computer(self, computer: str, out: Path) -> str:
        """Files for node `computer` in `out`; the slapos.cfg lines that use them."""
        identity = Identity.for_computer(computer)  # checked before any file
        paths = write_client_files(out, issue_client(self.store, self.authority, identity))
        return node_config_lines(computer, paths)

    def add_user(self, user: str, out: Path) -> str:
        """Files for user `user` in `out`; the `[slapconsole]` lines that use them."""
        identity = Identity.for_user(user)
        paths = write_client_files(out, issue_client(self.store, self.authority, identity))
        return user_config_lines(paths)

    def create_token(self, computer: str, hours: float = 24.0) -> str:
        return create_token(self.store, computer, ttl=datetime.timedelta(hours=hours))
