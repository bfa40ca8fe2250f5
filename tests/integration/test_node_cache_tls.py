"""A slapgrid node and a TLS master's networkcache: the node uploads a release's archive
and installs it from the cache with its computer certificate (`shacache-*`/`shadir-*`
files), downloads included; without a certificate the master refuses, and the node builds.

Our own client (node/software/cache/client.py) speaks to the cache; slapos.libnetworkcache
is not installed in slapgrid's environment.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from master_site import small_computer
from slapgrid.master.pki.authority import Authority
from slapgrid.master.pki.identity import Identity
from slapgrid.master.server import MasterServer
from slapgrid.master.storage import MasterStore
from slapgrid.node.safety import software_hash
from slapgrid.node.software.cache import decisions, transfer
from slapgrid.node.software.cache.client import (
    Endpoint,
    NetworkCache,
    StatusError,
)
from slapgrid.node.software.cache.decisions import CacheSettings
from support.signing import signer
from support.tls import credential_files

pytestmark = pytest.mark.integration

COMP = "COMP-NODE-TLS"
URL = "https://example.com/software/tls/software.cfg"


@dataclass
class Site:
    url: str
    ca: Path
    key: Path
    cert: Path
    signing_key: Path
    certificate: str
    root: Path

    def settings(self, *, tls: bool = True, upload: bool = False) -> CacheSettings:
        options = {
            "download-binary-cache-url": f"{self.url}/shacache",
            "download-binary-dir-url": f"{self.url}/shadir",
            "signature-certificate-list": self.certificate,
        }
        if upload:
            options |= {
                "upload-binary-cache-url": f"{self.url}/shacache",
                "upload-binary-dir-url": f"{self.url}/shadir",
                "signature-private-key-file": str(self.signing_key),
            }
        if tls:
            for service in ("shacache", "shadir"):
                options |= {
                    f"{service}-ca-file": str(self.ca),
                    f"{service}-cert-file": str(self.cert),
                    f"{service}-key-file": str(self.key),
                }
        return CacheSettings(options)

    def endpoint(self, name: str) -> Endpoint:
        return Endpoint(f"{self.url}/{name}", str(self.ca), str(self.cert), str(self.key))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    directory = tmp_path_factory.mktemp("node-tls")
    authority = Authority.open(directory / "pki")
    store = MasterStore(directory / "master.db", default_computer=COMP)
    store.load_computer_configuration(small_computer(COMP, 1))
    key, cert = credential_files(authority, Identity.for_computer(COMP), directory / "computer")
    signing_key, certificate = signer(directory, "signer")
    with MasterServer(store, authority=authority) as server:
        yield Site(
            server.url.rstrip("/"),
            Path(authority.ca_file),
            key,
            cert,
            signing_key,
            certificate,
            directory,
        )
    store.close()


def test_the_client_uploads_and_downloads_with_a_computer_certificate(site: Site) -> None:
    client = NetworkCache(
        site.endpoint("shacache"),
        site.endpoint("shadir"),
        certificates=[site.certificate],
        private_key_file=str(site.signing_key),
    )
    data = site.root / "blob"
    data.write_bytes(b"x" * 300_000)
    digest = hashlib.sha512(data.read_bytes()).hexdigest()
    assert client.upload(data, "tls-key", {"url": "u"}) == digest
    assert client.upload(data, "tls-key", {"url": "u"}) == digest  # present: not sent again
    [entry, *_] = client.select("tls-key")
    assert entry == {"sha512": digest, "url": "u"}
    out = site.root / "out"
    with out.open("wb") as handle:
        client.download(digest, handle)
    assert out.read_bytes() == data.read_bytes()
    with pytest.raises(StatusError) as missing:
        client.download("0" * 128, (site.root / "missing").open("wb"))
    assert missing.value.status == 404
    # no certificate: the master refuses to read its cache
    anonymous = NetworkCache(
        Endpoint(f"{site.url}/shacache", str(site.ca)),
        Endpoint(f"{site.url}/shadir", str(site.ca)),
    )
    with pytest.raises(StatusError) as refused:
        anonymous.entries("tls-key")
    assert refused.value.status == 403


def test_a_node_installs_from_a_tls_master_cache_with_its_computer_certificate(
    site: Site,
) -> None:
    built = site.root / "built" / software_hash(URL)
    (built / "bin").mkdir(parents=True)
    (built / "bin" / "tool").write_text("#!/bin/sh\necho tool\n")
    (built / ".completed").write_text("")
    sha512 = transfer.publish(site.settings(upload=True), URL, built)
    assert sha512 is not None

    target = site.root / "node" / software_hash(URL)
    target.parent.mkdir()
    origin = transfer.fetch(site.settings(), URL, target)
    assert origin.from_cache, origin.reason
    assert (target / "bin" / "tool").read_text() == "#!/bin/sh\necho tool\n"
    assert not (target / ".completed").exists()  # never archived

    # without the TLS files the download is refused (no CA, no certificate): a build
    other = site.root / "bare" / software_hash(URL)
    other.parent.mkdir()
    origin = transfer.fetch(site.settings(tls=False), URL, other)
    assert not origin.from_cache and origin.reason.startswith(decisions.UNREACHABLE)
    assert not other.exists()


def test_the_entry_is_signed_as_the_reference_signs(site: Site) -> None:
    """base64 of a SHA-1 PKCS#1 v1.5 signature of the entry's bytes (openssl dgst -sha1)."""
    client = NetworkCache(
        site.endpoint("shacache"),
        site.endpoint("shadir"),
        certificates=[site.certificate],
        private_key_file=str(site.signing_key),
    )
    client.index("signed-key", {"sha512": "1" * 128})
    [(text, signature)] = client.entries("signed-key")
    assert json.loads(text) == {"sha512": "1" * 128}
    expected = subprocess.run(
        ["openssl", "dgst", "-sha1", "-sign", str(site.signing_key)],
        input=text.encode(),
        capture_output=True,
        check=True,
    ).stdout
    assert base64.b64decode(signature) == expected
    assert client.trusted(text, signature) and not client.trusted(text + " ", signature)


def test_the_agent_has_no_slapos_namespace_package() -> None:
    """slapos.libnetworkcache's -nspkg.pth made `slapos` a namespace package in every
    process of this interpreter (the pip zc.buildout runs included), and slapos.core's
    sdist failed to build: nothing of the agent imports or installs `slapos` now."""
    code = "import sys, slapgrid.node.software.cache.transfer; print('slapos' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
    site_packages = Path(sysconfig.get_paths()["purelib"])
    assert not list(site_packages.glob("*nspkg.pth"))
