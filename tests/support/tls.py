"""Callers of a TLS master in tests: each with a certificate made on the spot, or none;
and a TLS master with the files its node and its user are given (`tls_master`)."""

from __future__ import annotations

import contextlib
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from slapgrid.master import credentials
from slapgrid.master.credentials import (
    CA_FILE,
    CERT_FILE,
    KEY_FILE,
    MasterCredentials,
    user_config_lines,
)
from slapgrid.master.pki.authority import Authority, cert_pem
from slapgrid.master.pki.identity import PARTITION, USER, Identity
from slapgrid.master.server import MasterServer
from slapgrid.master.storage import MasterStore
from slapgrid.slap.client import SlapClient


def credential_files(
    authority: Authority, identity: Identity, directory: Path
) -> tuple[Path, Path]:
    """(key, certificate) files for `identity`, issued by `authority` into `directory`."""
    key, certificate = authority.issue_key_pair(identity)
    name = "-".join(
        filter(None, (identity.kind, identity.computer, identity.partition, identity.user))
    )
    directory.mkdir(parents=True, exist_ok=True)
    key_file, cert_file = directory / f"{name}.key", directory / f"{name}.pem"
    key_file.write_bytes(key)
    cert_file.write_bytes(cert_pem(certificate))
    return key_file, cert_file


def partition_files(
    store: MasterStore, authority: Authority, identity: Identity, directory: Path
) -> tuple[Path, Path]:
    """(key, certificate) files of a partition, as the master hands them to its node: good
    while the partition holds its current instance."""
    issued = credentials.partition_certificate(
        store, authority, identity.computer or "", identity.partition or ""
    )
    directory.mkdir(parents=True, exist_ok=True)
    name = f"partition-{identity.computer}-{identity.partition}"
    key_file, cert_file = directory / f"{name}.key", directory / f"{name}.pem"
    key_file.write_text(issued["key"])
    cert_file.write_text(issued["certificate"])
    return key_file, cert_file


def client_context(
    ca_file: Path, key_file: Path | None = None, cert_file: Path | None = None
) -> ssl.SSLContext:
    """What a node does: verify the master against its CA, present its own certificate."""
    context = ssl.create_default_context(cafile=str(ca_file))
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file)
    return context


def https_client(
    url: str,
    authority: Authority,
    identity: Identity | None = None,
    *,
    issuer: Authority | None = None,
    store: MasterStore | None = None,
) -> httpx.Client:
    """An httpx client of the master at `url` trusting `authority`, presenting a certificate
    for `identity` issued by `issuer` (default: the master's own CA), or none. A partition's
    is the master's own for its instance, from `store`."""
    if identity is None:
        context = client_context(authority.ca_file)
    else:
        with tempfile.TemporaryDirectory() as directory:  # loaded into the context, then gone
            if identity.kind == PARTITION and issuer is None:
                assert store is not None, "a partition's certificate comes from the master"
                files = partition_files(store, authority, identity, Path(directory))
            else:
                files = credential_files(issuer or authority, identity, Path(directory))
            context = client_context(authority.ca_file, *files)
    return httpx.Client(base_url=url, verify=context, timeout=30)


def node_client(url: str, authority: Authority, computer: str, directory: Path) -> SlapClient:
    """A node's SLAP client of the master at `url`, with a certificate for `computer`."""
    key_file, cert_file = credential_files(authority, Identity.for_computer(computer), directory)
    return SlapClient(
        url, computer, key_file=key_file, cert_file=cert_file, ca_file=authority.ca_file
    )


# --- a TLS master with the credentials its callers are given ------------------------------


@dataclass(frozen=True)
class Credentials:
    """A caller's files as `slapgrid master computer add|user add --out DIR` writes them."""

    key_file: Path
    cert_file: Path
    ca_file: Path

    def node_options(self) -> dict[str, str]:
        """A node's `[slapos]` options using them (read by our agent and the reference's)."""
        return {
            "key_file": str(self.key_file),
            "cert_file": str(self.cert_file),
            "master_ca_file": str(self.ca_file),
        }

    def console_lines(self) -> str:
        """A user's `[slapconsole]` section using them, as `slapgrid master user add` prints
        it: read by `slapgrid supply|request|show` and `slapos supply|request|service` (which
        ignores `master_ca_file`)."""
        return user_config_lines((self.key_file, self.cert_file, self.ca_file))

    def client(self, url: str, computer: str) -> SlapClient:
        """Our SLAP client with these files, verifying the master against the CA."""
        return SlapClient(
            url, computer, key_file=self.key_file, cert_file=self.cert_file, ca_file=self.ca_file
        )


def add_credentials(server: MasterServer, identity: Identity, out: Path) -> Credentials:
    """What `slapgrid master computer add|user add --out` does: issued, recorded, written."""
    assert server.authority is not None, "a TLS master has an authority"
    master = MasterCredentials(server.store, server.authority)
    if identity.kind == USER:
        master.add_user(identity.user or "", out)
    else:
        master.add_computer(identity.computer or "", out)
    return Credentials(out.resolve() / KEY_FILE, out.resolve() / CERT_FILE, out.resolve() / CA_FILE)


@dataclass(frozen=True)
class TlsMaster:
    """Our master over HTTPS, a computer's credentials and a user's."""

    server: MasterServer
    computer_id: str
    computer: Credentials  # the node's: computer calls (format, software, instance, report)
    user: Credentials  # a user's: supply, request, show

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def store(self) -> MasterStore:
        return self.server.store

    def node_client(self) -> SlapClient:
        return self.computer.client(self.url, self.computer_id)

    def user_client(self) -> SlapClient:
        """A user's client: user calls name no computer; `supply` defaults to this one."""
        return self.user.client(self.url, self.computer_id)


USER_NAME = "tester"


@contextlib.contextmanager
def tls_master(
    root: Path, computer: str, user: str = USER_NAME, *, database: str | None = None
) -> Iterator[TlsMaster]:
    """Our master serving HTTPS on 127.0.0.1, its database in `root` (unless `database`
    says where), its CA in `root/pki`, its cache in `root/cache`, `computer` existing; the
    credentials of `computer` and of `user` in `root/credentials`."""
    store = MasterStore(database or root / "master.db", default_computer=computer)
    try:
        authority = Authority.open(root / "pki")
        with MasterServer(store, authority=authority, cache_dir=root / "cache") as server:
            files = root / "credentials"
            yield TlsMaster(
                server,
                computer,
                add_credentials(server, Identity.for_computer(computer), files / computer),
                add_credentials(server, Identity.for_user(user), files / f"user-{user}"),
            )
    finally:
        store.close()
