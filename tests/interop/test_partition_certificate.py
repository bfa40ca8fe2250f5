"""The reference's calls for credentials against our master: a partition's certificate, and
`slapos node register`'s token traded for a node's key pair.

slapos.core's `_updateCertificate` calls `getCertificate()` and writes `certificate` and
`key` into the partition when they differ from the files; the pair must be real, the same
on every call (no rewrite each run), and read back as that partition.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from master_site import small_computer
from slapgrid.master import credentials
from slapgrid.master.pki.authority import Authority
from slapgrid.master.pki.identity import Identity
from slapgrid.master.server import MasterServer
from slapgrid.master.storage import InstanceRequest, MasterStore
from support.tls import tls_master

pytestmark = pytest.mark.interop

COMP = "COMP-REF-CERT"
SR = "https://example.com/software/web/software.cfg"
SCRIPT = """
import json, sys
from slapos import slap
connection = slap.slap()
connection.initializeConnection(sys.argv[1], key_file=sys.argv[3], cert_file=sys.argv[4])
partition = connection.registerComputerPartition(sys.argv[2], "slappart0")
print(json.dumps([partition.getCertificate(), partition.getCertificate()]))
"""


def test_the_reference_client_gets_the_partitions_certificate(
    reference_python: Path, tmp_path: Path, database: str
) -> None:
    """As `slapos node instance` asks it: over HTTPS, with the computer's certificate."""
    with tls_master(tmp_path, COMP, database=database) as master:
        master.store.load_computer_configuration(small_computer(COMP, 1))
        master.store.request(InstanceRequest(SR, "web"))
        files = (master.computer.key_file, master.computer.cert_file)
        result = subprocess.run(
            [str(reference_python), "-c", SCRIPT, master.url, COMP, *map(str, files)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        authority = master.server.authority
    assert authority is not None
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = json.loads(result.stdout)
    assert first == second
    assert set(first) == {"certificate", "key"}
    cert = x509.load_pem_x509_certificate(first["certificate"].encode())
    key = serialization.load_pem_private_key(first["key"].encode(), None)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert authority.identity_of(cert) == Identity.for_partition(COMP, "slappart0")


REGISTER = """
import json, logging, sys
from slapos.cli.register import get_certificate_key_pair
certificate, key = get_certificate_key_pair(logging.getLogger(), *sys.argv[1:4])
print(json.dumps({"certificate": certificate, "key": key}))
"""


def test_the_reference_node_register_call_trades_our_token(
    reference_python: Path, tmp_path: Path, database: str
) -> None:
    """`slapos node register`'s download of the node's key pair, against our master."""
    store = MasterStore(database)
    authority = Authority.open(tmp_path / "pki")
    token = credentials.create_token(store, COMP)
    with MasterServer(store, authority=authority) as server:
        url = server.url.rstrip("/")
        runs = [
            subprocess.run(
                [str(reference_python), "-c", REGISTER, url, COMP, token],
                capture_output=True,
                text=True,
                timeout=120,
            )
            for _ in range(2)
        ]
    store.close()
    assert runs[0].returncode == 0, runs[0].stderr[-3000:]
    answer = json.loads(runs[0].stdout)
    cert = x509.load_pem_x509_certificate(answer["certificate"].encode())
    key = serialization.load_pem_private_key(answer["key"].encode(), None)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert authority.identity_of(cert) == Identity.for_computer(COMP)
    assert runs[1].returncode != 0  # the token is spent
    assert "check the authentication token" in runs[1].stderr
