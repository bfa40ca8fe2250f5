"""Each node agent against the other's master, deploying examples/hello end to end.

* Our agent (format, software, instance, report) against the reference `slapos proxy`; the
  user side is the reference client library, which must see what our agent published.
* The reference agent (`slapos node software|instance|report` of slapos.core 1.26.1) against
  our embedded master over HTTPS, with the computer's certificate our master issued, which
  must record what the reference reported; the user side is a user's certificate.

Both walk the same life: build, start (the service answers, the promise is kept, the
connection parameter `url` reaches the requester), stop, start, destroy, free. Run as root,
the reference refuses root-owned directories, so its node belongs to the account of
`reference_env.node_user()` (skipped, with the reason, when that account cannot run the
reference's interpreter).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

import reference_env
from nodes import format_partitions
from slapgrid.master.pki.identity import Identity
from slapgrid.master.storage import MasterStore
from slapgrid.node.config import NodeConfig
from slapgrid.node.instance.run import run_instance
from slapgrid.node.report.run import run_report
from slapgrid.node.safety import software_hash
from slapgrid.node.software.run import run_software
from slapgrid.slap.client import SlapClient
from support.configs import node_config
from support.tls import TlsMaster, tls_master

pytestmark = pytest.mark.interop

SOFTWARE = str(Path(__file__).resolve().parents[2] / "examples" / "hello" / "software.cfg")

# What a user does with the reference client library: request (and read the answer), or
# list the computer's partitions. Run by the reference's Python; prints JSON.
USER_SIDE = """
import json, sys
from slapos import slap
url, computer, action, *args = sys.argv[1:]
connection = slap.slap()
connection.initializeConnection(url)
if action == "request":
    software, title, state = args
    instance = connection.registerOpenOrder().request(
        software, title, state=state, filter_kw={"computer_guid": computer}
    )
    seen = {"id": instance.getId(), "connection": instance.getConnectionParameterDict()}
else:
    seen = {
        p.getId(): {"state": p.getState(), "busy": p._software_release_document is not None}
        for p in connection.registerComputer(computer).getComputerPartitionList()
    }
print(json.dumps(seen))
"""


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return answer.read().decode()


def refuses(url: str) -> bool:
    try:
        get(url)
    except urllib.error.URLError:
        return True
    return False


PARTITIONS = 4  # a partition per test that deploys: they pass alone and in any order


def partition_of(client: SlapClient, instance_root: Path, title: str) -> Path:
    """The directory of the partition hosting the instance `title`."""
    for partition in client.computer().partitions:
        if partition.instance_title == title:
            return instance_root / partition.partition_id
    raise AssertionError(f"no partition hosts {title}")


def services(partition: Path) -> list[psutil.Process]:
    """The processes serving files of `partition` (hello's http.server)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if str(partition / "srv" / "www") in (process.info["cmdline"] or []):
            found.append(process)
    return found


# --- our agent against the reference proxy ---------------------------------------------


@dataclass
class OurNode:
    config: NodeConfig
    client: SlapClient
    python: Path  # the reference's, for the user side
    url: str
    computer: str
    software_code: int

    def user(self, action: str, *args: str) -> dict[str, Any]:
        command = [str(self.python), "-c", USER_SIDE, self.url, self.computer, action, *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout)

    def request(self, title: str, state: str) -> dict[str, Any]:
        return self.user("request", SOFTWARE, title, state)

    def partition(self, title: str) -> Path:
        return partition_of(self.client, self.config.instance_root, title)

    def deployed(self, title: str) -> str:
        """`title` requested started and deployed by our agent: its URL."""
        self.request(title, "started")
        assert run_instance(self.config, self.client).status == 0
        return self.request(title, "started")["connection"]["url"]


@pytest.fixture(scope="module")
def our_node(reference_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OurNode]:
    root = tmp_path_factory.mktemp("proxy-node")
    computer = "COMP-PROXY"
    with reference_env.reference_proxy(reference_venv, root, computer) as url:
        format_partitions(url, root, PARTITIONS, computer=computer)
        config = node_config(
            root,
            master_url=url,
            computer_id=computer,
            software_min_free_space=0,
            instance_min_free_space=0,
            promise_timeout=10,
        )
        client = SlapClient(url, computer)
        try:
            client.supply(SOFTWARE)
            code = run_software(config, client).status
            yield OurNode(config, client, reference_venv / "bin" / "python", url, computer, code)
        finally:
            reference_env.stop_supervisord(config.instance_root)
            client.close()


def test_our_agent_builds_what_the_proxy_supplies(our_node: OurNode) -> None:
    assert our_node.software_code == 0
    software = our_node.config.software_root / software_hash(SOFTWARE)
    assert (software / ".completed").exists()
    assert (software / "instance.cfg").exists()


def test_our_agent_deploys_and_the_reference_client_sees_the_url(our_node: OurNode) -> None:
    first = our_node.request("deploys", "started")
    assert first["connection"] == {}
    assert run_instance(our_node.config, our_node.client).status == 0
    answer = our_node.request("deploys", "started")
    assert answer["id"] == first["id"]
    url = answer["connection"]["url"]
    assert "Hello from deploys" in get(url)
    partition = our_node.partition("deploys")
    results = list((partition / ".slapgrid/promise/result").iterdir())
    assert [json.loads(r.read_text())["result"]["failed"] for r in results] == [False]
    # the proxy's timestamp is a float in a string: kept verbatim, so the next run skips
    timestamp = (partition / ".timestamp").read_text()
    float(timestamp)
    log = partition / ".slapgrid/log/instance.log"
    size = log.stat().st_size
    assert run_instance(our_node.config, our_node.client).status == 0
    assert log.stat().st_size == size


def test_our_agent_stops_and_starts_as_the_proxy_requests(our_node: OurNode) -> None:
    url = our_node.deployed("stops")
    our_node.request("stops", "stopped")
    assert run_instance(our_node.config, our_node.client).status == 0
    assert refuses(url)
    our_node.request("stops", "started")
    assert run_instance(our_node.config, our_node.client).status == 0
    assert "Hello from stops" in get(url)


def test_our_agent_destroys_and_the_proxy_frees_the_partition(our_node: OurNode) -> None:
    url = our_node.deployed("destroys")
    partition = our_node.partition("destroys")
    before = our_node.user("partitions")
    assert before[partition.name] == {"state": "started", "busy": True}
    our_node.request("destroys", "destroyed")
    assert run_instance(our_node.config, our_node.client).status == 0
    assert refuses(url)
    assert run_report(our_node.config, our_node.client).status == 0
    assert [p.name for p in partition.iterdir()] == [".slapos-resource"]  # as the reference
    after = our_node.user("partitions")
    assert after[partition.name] == {"state": "destroyed", "busy": False}
    freed = next(
        p for p in our_node.client.computer().partitions if p.partition_id == partition.name
    )
    assert freed.is_free


# --- the reference agent against our master --------------------------------------------


def run_reference(venv: Path, command: str, config: Path) -> reference_env.NodeRun:
    return reference_env.run_node(reference_env.reference(venv, command, config), timeout=600)


@dataclass
class ReferenceNode:
    venv: Path
    config: Path
    root: Path
    master: TlsMaster
    client: SlapClient  # the computer's
    requester: SlapClient  # a user's
    computer: str
    user: str
    software: reference_env.NodeRun

    @property
    def store(self) -> MasterStore:
        return self.master.store

    def node(self, command: str) -> reference_env.NodeRun:
        return run_reference(self.venv, command, self.config)

    def instance(self) -> reference_env.NodeRun:
        """`slapos node instance`, run again once if the promise lost the start-up race.

        The reference asks supervisord to start the service without waiting, then runs the
        promise at once: hello's promise may find its server not listening yet. The
        reference then reports a promise failure (exit 2) and the next run deploys again,
        as a node's periodic run would.
        """
        run = self.node("instance")
        if run.returncode == 2 and "Connection refused" in run.output:
            run = self.node("instance")
        assert run.returncode == 0, run.output[-3000:]
        return run

    def request(self, title: str, state: str) -> dict[str, str]:
        return self.requester.request(SOFTWARE, title, state=state).connection

    def partition(self, title: str) -> Path:
        return partition_of(self.client, self.root / "instance", title)

    def deployed(self, title: str) -> str:
        """`title` requested started and deployed by the reference: its URL."""
        self.request(title, "started")
        self.instance()
        return self.request(title, "started")["url"]

    def status(self, partition: Path) -> str:
        return self.store.partition_status(self.computer, partition.name)["text"]


@pytest.fixture(scope="module")
def reference_node(reference_venv: Path, module_database: str) -> Iterator[ReferenceNode]:
    """The reference's `slapos node` against our master, on SQLite and on PostgreSQL."""
    try:
        user = reference_env.node_user(reference_venv / "bin" / "python")
    except reference_env.Unavailable as exc:
        pytest.skip(str(exc))
    root = reference_env.public_tempdir("slapgrid-interop-")
    computer = "COMP-REF"
    try:
        with (
            tls_master(root, computer, database=module_database) as master,
            master.node_client() as client,
            master.user_client() as requester,
        ):
            format_partitions(
                master.url, root, PARTITIONS, computer=computer, credentials=master.computer
            )
            reference_env.give_to(user, root / "software", *(root / "instance").glob("slappart*"))
            config = reference_env.write_node_config(
                root / "slapos.cfg",
                master_url=master.url,
                computer_id=computer,
                software_root=root / "software",
                instance_root=root / "instance",
                extra=reference_env.tls_options(
                    root, master.computer.key_file, master.computer.cert_file
                ),
            )
            requester.supply(SOFTWARE)
            software = run_reference(reference_venv, "software", config)
            try:
                yield ReferenceNode(
                    reference_venv,
                    config,
                    root,
                    master,
                    client,
                    requester,
                    computer,
                    user.pw_name,
                    software,
                )
            finally:
                reference_env.stop_supervisord(root / "instance")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_reference_builds_and_our_master_records_it(reference_node: ReferenceNode) -> None:
    node = reference_node
    assert node.software.returncode == 0, node.software.output[-3000:]
    software = node.root / "software" / software_hash(SOFTWARE)
    assert (software / ".completed").exists()
    assert software.owner() == node.user  # built as the software root's owner
    status = node.store.software_status(node.computer, SOFTWARE)["text"]
    assert status == f"#access software release {SOFTWARE} available"


def test_reference_deploys_and_our_master_records_it(reference_node: ReferenceNode) -> None:
    node = reference_node
    assert node.request("deploys", "started") == {}
    run = node.instance()
    assert "answered 200" in run.output  # the promise ran
    partition = node.partition("deploys")
    assert node.status(partition) == "#access Instance correctly started"
    url = node.request("deploys", "started")["url"]
    assert "Hello from deploys" in get(url)
    assert [p.username() for p in services(partition)] == [node.user]
    # the reference fetched the partition's certificate for its recipes, with the computer's
    certificate = node.root / "certificates" / f"{partition.name}.crt"
    assert certificate.owner() == node.user
    authority = node.master.server.authority
    assert authority is not None
    identity = authority.identity_of(certificate.read_bytes())
    assert identity == Identity.for_partition(node.computer, partition.name)


def test_reference_stops_and_starts_as_our_master_requests(reference_node: ReferenceNode) -> None:
    node = reference_node
    url = node.deployed("stops")
    partition = node.partition("stops")
    node.request("stops", "stopped")
    node.instance()
    assert node.status(partition) == "#access Instance correctly stopped"
    assert refuses(url)
    node.request("stops", "started")
    node.instance()
    assert node.status(partition) == "#access Instance correctly started"
    assert "Hello from stops" in get(url)


def test_reference_destroys_and_our_master_frees_the_partition(
    reference_node: ReferenceNode,
) -> None:
    node = reference_node
    url = node.deployed("destroys")
    partition = node.partition("destroys")
    node.request("destroys", "destroyed")
    node.instance()
    assert refuses(url)
    run = node.node("report")
    assert run.returncode == 0, run.output[-3000:]
    assert [p.name for p in partition.iterdir()] in ([], [".slapos-resource"])
    freed = next(p for p in node.client.computer().partitions if p.partition_id == partition.name)
    assert freed.is_free
