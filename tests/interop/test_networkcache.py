"""The reference's networkcache client (slapos.libnetworkcache) against our TLS master: what
a node does to share a build (upload a file, index it under a signed key) and to reuse one
(select the key's entries it trusts, download the file, checked), and the command-line
tools `networkcache-upload` and `networkcache-download`.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from master_site import small_computer
from slapgrid.master.pki.authority import Authority
from slapgrid.master.pki.identity import Identity
from slapgrid.master.server import MasterServer
from slapgrid.master.storage import InstanceRequest, MasterStore
from support.tls import credential_files, partition_files

pytestmark = pytest.mark.interop

COMP = "COMP-NETCACHE"
SR = "https://example.com/software/cache/software.cfg"
ARCHIVE_URL = "https://example.com/downloads/big-1.0.tar.gz"
KEY = "file-urlmd5:" + hashlib.md5(ARCHIVE_URL.encode()).hexdigest()

SCRIPT = """
import json, sys
from urllib.error import HTTPError
from slapos.libnetworkcache import NetworkcacheClient

config, content_file, key, url = sys.argv[1:5]
config = json.loads(config)
client = NetworkcacheClient(config)
result = {}

def status(call):
    try:
        return ["ok", call()]
    except HTTPError as exc:
        return ["http", exc.code]

with open(content_file, "rb") as f:
    result["upload"] = status(lambda: client.upload(f, key, url=url, origin="interop"))
with open(content_file, "rb") as f:  # already there: checked by a GET, not sent again
    result["again"] = status(lambda: client.upload(f, key, url=url, origin="interop"))
result["select"] = status(lambda: list(client.select(key, {"origin": "interop"})))
result["missing"] = status(lambda: list(client.select("file-urlmd5:" + "0" * 32)))
if result["select"][0] == "ok" and result["select"][1]:
    sha512 = result["select"][1][0]["sha512"]
    result["download"] = status(lambda: client.download(sha512).read().decode("latin-1"))
print(json.dumps(result))
"""


def signing_pair(directory: Path) -> tuple[Path, str]:
    """A key to sign shadir entries with, and its certificate (what nodes trust)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "networkcache signer")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    key_file = directory / "signature.key"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return key_file, certificate.public_bytes(serialization.Encoding.PEM).decode()


def client_config(
    url: str, ca: Path, key_file: Path, cert_file: Path, signature: tuple[Path, str]
) -> dict[str, str]:
    """The [networkcache] section a node would have, for the master at `url`."""
    config = {
        "signature-private-key-file": str(signature[0]),
        "signature-certificate-list": signature[1],
    }
    for where, path in (("cache", "shacache"), ("dir", "shadir")):
        for way in ("download", "upload"):
            config[f"{way}-{where}-url"] = url + path
        config[f"sha{where}-ca-file"] = str(ca)
        config[f"sha{where}-cert-file"] = str(cert_file)
        config[f"sha{where}-key-file"] = str(key_file)
    return config


def run(python: Path, config: dict[str, str], content: Path) -> dict[str, Any]:
    result = subprocess.run(
        [str(python), "-c", SCRIPT, json.dumps(config), str(content), KEY, ARCHIVE_URL],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


@pytest.fixture
def master(tmp_path: Path) -> Any:
    store = MasterStore(tmp_path / "master.db", default_computer=COMP)
    authority = Authority.open(tmp_path / "pki")
    store.load_computer_configuration(small_computer(COMP, 1))
    store.request(InstanceRequest(SR, "web"))
    with MasterServer(store, authority=authority) as server:
        yield server, store, authority
    store.close()


def test_a_node_shares_a_file_and_a_partition_reuses_it(
    reference_python: Path, tmp_path: Path, master: Any
) -> None:
    server, store, authority = master
    content = tmp_path / "big-1.0.tar.gz"
    content.write_bytes(bytes(range(256)) * 40_000)  # 10 MB
    sha512 = hashlib.sha512(content.read_bytes()).hexdigest()
    signature = signing_pair(tmp_path)
    computer = credential_files(authority, Identity.for_computer(COMP), tmp_path / "comp")
    config = client_config(server.url, authority.ca_file, *computer, signature)

    shared = run(reference_python, config, content)
    assert shared["upload"] == ["ok", sha512]
    assert shared["again"] == ["ok", sha512]
    [entry] = shared["select"][1]
    assert entry == {"sha512": sha512, "url": ARCHIVE_URL, "origin": "interop"}
    assert shared["missing"] == ["http", 404]
    assert shared["download"] == ["ok", content.read_bytes().decode("latin-1")]
    stored = server.cache.directory
    assert (stored / "shacache" / sha512).read_bytes() == content.read_bytes()
    assert len(json.loads((stored / "shadir" / KEY).read_text())) == 1  # indexed once

    # a partition reads what its node shared, and uploads nothing
    partition = partition_files(
        store, authority, Identity.for_partition(COMP, "slappart0"), tmp_path / "part"
    )
    other = tmp_path / "other.tar.gz"
    other.write_bytes(b"a partition's own build")
    reused = run(
        reference_python, client_config(server.url, authority.ca_file, *partition, signature), other
    )
    assert reused["upload"] == ["http", 403]
    assert [e["sha512"] for e in reused["select"][1]] == [sha512]
    assert reused["download"] == ["ok", content.read_bytes().decode("latin-1")]
    assert not (stored / "shacache" / hashlib.sha512(other.read_bytes()).hexdigest()).exists()


def test_the_networkcache_command_line_tools(
    reference_venv: Path, tmp_path: Path, master: Any
) -> None:
    """`networkcache-upload` and `networkcache-download`, with a user's certificate."""
    server, _, authority = master
    signature = signing_pair(tmp_path)
    user = credential_files(authority, Identity.for_user("alice"), tmp_path / "user")
    config = client_config(server.url, authority.ca_file, *user, signature)
    config["signature-certificate-list"] = config["signature-certificate-list"].replace(
        "\n", "\n  "
    )
    cfg = tmp_path / "networkcache.cfg"
    cfg.write_text(
        "[networkcache]\n" + "".join(f"{name} = {value}\n" for name, value in config.items())
    )
    content = tmp_path / "data.bin"
    content.write_bytes(b"built by alice\n" * 1000)
    uploaded = subprocess.run(
        [
            str(reference_venv / "bin" / "networkcache-upload"),
            "-c",
            str(cfg),
            "-f",
            str(content),
            "-k",
            "alice:data",
            "version=1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert uploaded.returncode == 0, uploaded.stderr[-3000:]
    download = [str(reference_venv / "bin" / "networkcache-download"), "-c", str(cfg)]
    listed = subprocess.run(
        [*download, "-k", "alice:data", "--list"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr[-3000:]
    sha512 = hashlib.sha512(content.read_bytes()).hexdigest()
    assert json.loads(listed.stdout) == [{"sha512": sha512, "version": "1"}]
    downloaded = subprocess.run(
        [*download, "-k", "alice:data", 'version=="1"'],
        capture_output=True,
        timeout=120,
    )
    assert downloaded.returncode == 0, downloaded.stderr[-3000:]
    assert downloaded.stdout == content.read_bytes()
