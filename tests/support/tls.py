"""Callers of a TLS master in tests: each with a certificate made on the spot, or none."""

from __future__ import annotations

import ssl
import tempfile
from pathlib import Path

import httpx

from slapgrid.master import credentials
from slapgrid.master.pki.authority import Authority, cert_pem
from slapgrid.master.pki.identity import PARTITION, Identity
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
