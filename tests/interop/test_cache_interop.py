"""The binary cache across agents, through our master's networkcache: the reference
`slapos node software` (slapos.core 1.26.1) installs a release slapgrid built and uploaded,
and slapgrid installs one the reference built and uploaded, neither building it again.

The master is `--insecure` and plain HTTP, because that is the only way the reference can
download from it. 1.26.1 gives libnetworkcache its TLS files for uploads only: `Software.
install` downloads with `NetworkcacheClient(cache_url, dir_url,
signature_certificate_list=...)` (slapos/grid/networkcache.py, `download_network_cached`),
so there is no `shacache-ca-file`, client certificate or key. Over HTTPS libnetworkcache
then calls `load_cert_chain(None, None)`, which raises, and `fallback_call` turns that into
"no download": the reference builds. It reads `master_ca_file` and the
`shacache-*`/`shadir-*` files (and checks that they exist), but only for the SLAP calls and
uploads. Even with a CA it trusts, a download would present no certificate, and a TLS
master answers 403 to that (downloads need a certificate the master issued). So a reference
node can only download from a cache that lets anyone read, and here that is our insecure
master. The TLS case (uploads with a computer certificate, reads with any issued
certificate) is covered by tests/interop/test_networkcache.py.

Each release is examples/hello plus a part that appends a line to a counter file when it is
built (as tests/integration/test_networkcache.py). The counter shows whether a release was
built or unpacked. The log line the reference writes after a download ("Extracting archive
of cached software release") shows it too, and so does slapgrid's recorded origin
(`from cache`). Both agents use the same software root path: a release's files name
absolute paths. The release directory one node built is moved away before the other node
installs.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import reference_env
from slapgrid.master.server import MasterServer
from slapgrid.master.storage import MasterStore
from slapgrid.node.safety import software_hash
from slapgrid.node.state import StateStore
from slapgrid.slap.client import SlapClient
from support.signing import signer
from support.software_releases import counted_hello

pytestmark = pytest.mark.interop

COMPUTER = "COMP-CACHE-INTEROP"
DOWNLOADED = "Extracting archive of cached software release"  # the reference, after a download


@dataclass
class Node:
    """A software root and the master that both agents share; the node's cache keys vary."""

    root: Path
    venv: Path
    user_name: str
    server_url: str
    store: MasterStore
    client: SlapClient
    certificates: str  # the signers both agents trust

    @property
    def software_root(self) -> Path:
        return self.root / "software"

    def release(self, name: str) -> str:
        """A counted release: its URL (a local profile)."""
        profile = self.root / f"{name}.cfg"
        counter = self.root / "counters" / name
        profile.write_text(counted_hello(counter))
        self.client.supply(str(profile))
        return str(profile)

    def builds(self, name: str) -> int:
        counter = self.root / "counters" / name
        return counter.read_text().count("built") if counter.exists() else 0

    def config(self, name: str, signature_key: Path | None) -> Path:
        """slapos.cfg for both agents: download from the master's cache, and upload to it
        when `signature_key` is given."""
        path = reference_env.write_node_config(
            self.root / f"{name}.slapos.cfg",
            master_url=self.server_url,
            computer_id=COMPUTER,
            software_root=self.software_root,
            instance_root=self.root / "instance",
        )
        reference_env.add_master_cache(path, self.server_url, self.certificates, signature_key)
        return path

    def move_away(self, url: str, where: str) -> None:
        """The release's directory leaves the software root (the other node's is empty)."""
        self.software_root.joinpath(software_hash(url)).rename(self.root / where)

    def entries(self, url: str) -> list[dict[str, object]]:
        listed = self.root / "master-cache" / "shadir" / software_hash(url)
        return [json.loads(entry) for entry, _ in json.loads(listed.read_text())]

    def available(self, url: str) -> bool:
        status = self.store.software_status(COMPUTER, url)["text"]
        return status == f"#access software release {url} available"


@pytest.fixture(scope="module")
def node(reference_venv: Path) -> Iterator[Node]:
    try:
        user = reference_env.node_user(reference_venv / "bin" / "python")
    except reference_env.Unavailable as exc:
        pytest.skip(str(exc))
    root = reference_env.public_tempdir("slapgrid-cache-interop-")
    for name in ("software", "instance", "counters", "keys"):
        (root / name).mkdir()
    _, slapgrid_certificate = signer(root / "keys", "slapgrid")  # keys/slapgrid.key
    _, reference_certificate = signer(root / "keys", "reference")  # keys/reference.key
    reference_env.give_to(user, root / "software", root / "counters", root / "keys")
    store = MasterStore(root / "master.db", default_computer=COMPUTER)
    try:
        with (
            MasterServer(store, insecure=True, cache_dir=root / "master-cache") as server,
            SlapClient(server.url, COMPUTER) as client,
        ):
            yield Node(
                root,
                reference_venv,
                user.pw_name,
                server.url,
                store,
                client,
                slapgrid_certificate + reference_certificate,
            )
    finally:
        store.close()
        shutil.rmtree(root, ignore_errors=True)


def run_ours(config: Path) -> reference_env.NodeRun:
    return reference_env.run_node(reference_env.ours("software", config), timeout=600)


def run_reference(node: Node, config: Path) -> reference_env.NodeRun:
    # an upload failure would make the reference sleep 30 min before retrying: the timeout
    # stops it well before
    command = reference_env.reference(node.venv, "software", config)
    return reference_env.run_node(command, timeout=300)


def test_the_reference_installs_what_slapgrid_uploaded(node: Node) -> None:
    url = node.release("from-slapgrid")
    keys = node.root / "keys"
    built = run_ours(node.config("slapgrid-builds", keys / "slapgrid.key"))
    assert built.returncode == 0, built.output[-3000:]
    assert node.builds("from-slapgrid") == 1
    [entry] = node.entries(url)
    assert entry["software_url"] == url
    origins = StateStore(node.software_root).origins()
    assert origins[url] == "built: no cache entry"
    node.move_away(url, "built-by-slapgrid")

    installed = run_reference(node, node.config("reference-downloads", None))
    assert installed.returncode == 0, installed.output[-3000:]
    assert DOWNLOADED in installed.output, installed.output[-3000:]
    assert node.builds("from-slapgrid") == 1  # the reference did not build it
    software = node.software_root / software_hash(url)
    assert (software / ".completed").is_file()
    assert (software / "instance.cfg").is_file() and (software / "bin" / "buildout").is_file()
    assert software.owner() == node.user_name
    assert node.available(url)
    print(f"\nslapgrid built in {built.wall:.1f} s, reference installed in {installed.wall:.1f} s")


def test_slapgrid_installs_what_the_reference_uploaded(node: Node) -> None:
    url = node.release("from-reference")
    keys = node.root / "keys"
    built = run_reference(node, node.config("reference-builds", keys / "reference.key"))
    assert built.returncode == 0, built.output[-3000:]
    assert DOWNLOADED not in built.output
    assert node.builds("from-reference") == 1
    [entry] = node.entries(url)
    assert entry["software_url"] == url
    node.move_away(url, "built-by-reference")

    installed = run_ours(node.config("slapgrid-downloads", None))
    assert installed.returncode == 0, installed.output[-3000:]
    assert node.builds("from-reference") == 1  # slapgrid did not build it
    assert StateStore(node.software_root).origins()[url] == "from cache"
    software = node.software_root / software_hash(url)
    assert (software / ".completed").is_file()
    assert (software / "instance.cfg").is_file() and (software / "bin" / "buildout").is_file()
    assert node.available(url)
    print(f"\nreference built in {built.wall:.1f} s, slapgrid installed in {installed.wall:.1f} s")
