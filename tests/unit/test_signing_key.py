"""`slapgrid master signing-key`: a key shadir entries are signed with, its certificate
trusted. (That the reference reads such entries: tests/interop/test_cache_interop.py.)"""

from __future__ import annotations

import stat
from configparser import ConfigParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from slapgrid.cli.main import cli
from slapgrid.master.pki.files import CredentialError
from slapgrid.master.pki.signing import write_signing_key
from slapgrid.node.software.cache.client import Endpoint, NetworkCache, sign
from slapgrid.node.software.cache.decisions import split_certificates


def test_the_printed_lines_sign_and_verify(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["master", "signing-key", "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    parser = ConfigParser()
    parser.read_string(result.output)
    options = dict(parser.items("networkcache"))
    key = Path(options["signature-private-key-file"])
    assert key == tmp_path / "s" / "signature.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    certificates = split_certificates(options["signature-certificate-list"])
    # the client refuses a key whose certificate is not in the list: it is
    cache = NetworkCache(
        Endpoint("http://cache/shacache"),
        Endpoint("http://cache/shadir"),
        certificates=certificates,
        private_key_file=str(key),
    )
    assert cache.trusted("entry", sign(cache.private_key, "entry"))


def test_existing_files_are_never_replaced(tmp_path: Path) -> None:
    key, cert = write_signing_key(tmp_path, "signer")
    before = key.read_bytes(), cert.read_bytes()
    with pytest.raises(CredentialError, match="not replaced"):
        write_signing_key(tmp_path, "signer")
    assert (key.read_bytes(), cert.read_bytes()) == before
