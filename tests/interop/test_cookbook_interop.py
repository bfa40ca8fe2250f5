"""The cookbook Software Release (tests/software/cookbook) across agents and masters.

* Our agent builds and deploys it against the reference `slapos proxy`.
* The reference agent (`slapos node software|instance` of slapos.core 1.26.1) builds and
  deploys it against our embedded master, and runs its GenericPromise plugins with its
  own promise launcher: the plugins are checked against the real thing.
* Both deployments leave the same files in their partitions (see `partition_files`).

Each side converges as a SlapOS node does: the root's first buildout fails until its
child has published, the next runs finish it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import reference_env
from nodes import format_partitions, get
from slapgrid.master.storage import MasterStore
from slapgrid.node.config import NodeConfig
from slapgrid.node.instance.run import run_instance
from slapgrid.node.safety import software_hash
from slapgrid.node.software.run import run_software
from slapgrid.slap.client import SlapClient
from support import cookbook
from support.addresses import free_port
from support.configs import node_config
from support.master_databases import MasterDatabases
from support.tls import TlsMaster, tls_master
from support.waiting import wait_for

pytestmark = pytest.mark.interop

PARTITIONS = 3  # the root, its child; the shared instance lives in the child
REFERENCE_PARTITIONS = 5  # and a root with a failing promise, with its child
PUBLISHED = {"url", "child-url", "shared-url"}
CONVERGE_TIMEOUT = 300.0
REFERENCE_RUNS = 8  # `slapos node instance` runs allowed to converge (3 are needed)
PLUGINS = {"check-http-listening", "check_http_page"}

# What `partition_files` leaves out: what the agents write for themselves, not the
# instance. `.slapgrid*` and `.slapos-*` (logs, promise results and caches, error logs,
# request transactions, the format's resource file, retention lock), `.timestamp`, the
# services' logs and pid files, and what running the plugins leaves in etc/plugin (the
# promise launcher's empty `__init__.py`, Python's caches).
AGENT_NAMES = (".slapgrid", ".slapos-", ".timestamp")
AGENT_SUFFIXES = (".log", ".pid", ".pyc")
LAUNCHER_FILES = {"etc/plugin/__init__.py"}


def partition_files(partition: Path) -> set[str]:
    """What an instance put in `partition`: relative paths (directories end with `/`)."""
    found = set()
    for path in partition.rglob("*"):
        relative = path.relative_to(partition)
        if relative.parts[0].startswith(AGENT_NAMES) or "__pycache__" in relative.parts:
            continue
        name = relative.as_posix()
        if name.endswith(AGENT_SUFFIXES) or name in LAUNCHER_FILES:
            continue
        found.add(name + "/" if path.is_dir() and not path.is_symlink() else name)
    return found


def partition_of(client: SlapClient, instance_root: Path, title: str) -> Path:
    for partition in client.computer().partitions:
        if partition.instance_title == title:
            return instance_root / partition.partition_id
    raise AssertionError(f"no partition hosts {title}")


def plugin_results(partition: Path) -> dict[str, dict]:
    folder = partition / ".slapgrid" / "promise" / "result"
    return {path.name: json.loads(path.read_text()) for path in folder.glob("*.status.json")}


# --- our agent against the reference proxy ---------------------------------------------


@dataclass
class Deployed:
    """A converged root `shop`: what its requester sees, and its partitions."""

    connection: dict[str, str]
    root: Path
    child: Path


@dataclass
class OurNode:
    config: NodeConfig
    client: SlapClient
    url: str
    computer: str
    software_status: int
    shop: Deployed | None = None


@pytest.fixture(scope="module")
def our_node(reference_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OurNode]:
    """Our agent on a node of the reference proxy, the root `shop` requested and converged."""
    root = tmp_path_factory.mktemp("cookbook-proxy-node")
    computer = "COMP-PROXY"
    with reference_env.reference_proxy(reference_venv, root, computer) as proxy:
        format_partitions(proxy, root, PARTITIONS, computer=computer)
        config = node_config(
            root,
            master_url=proxy,
            computer_id=computer,
            software_min_free_space=0,
            instance_min_free_space=0,
            promise_timeout=20,
        )
        client = SlapClient(proxy, computer)
        try:
            built = cookbook.build(root, config)
            client.supply(built.url)
            status = int(run_software(config, client).status)
            node = OurNode(config, client, built.url, computer, status)
            if status == 0:
                node.shop = converge_ours(node, "shop")
            yield node
        finally:
            reference_env.stop_supervisord(config.instance_root)
            client.close()


def converge_ours(node: OurNode, title: str) -> Deployed:
    filter_ = {"computer_guid": node.computer}

    def published() -> dict[str, str] | None:
        connection = node.client.request(node.url, title, filter=filter_).connection
        if connection.keys() >= PUBLISHED:
            return connection
        run_instance(node.config, node.client)
        return None

    connection = wait_for(published, CONVERGE_TIMEOUT, f"{title} to publish on the proxy")
    instance_root = node.config.instance_root
    return Deployed(
        connection,
        partition_of(node.client, instance_root, title),
        partition_of(node.client, instance_root, f"{title} child"),
    )


def test_our_agent_builds_the_cookbook_release_the_proxy_supplies(our_node: OurNode) -> None:
    assert our_node.software_status == 0
    software = our_node.config.software_root / software_hash(our_node.url)
    assert (software / ".completed").exists()


def test_our_agent_deploys_the_cookbook_release_on_the_proxy(our_node: OurNode) -> None:
    shop = our_node.shop
    assert shop is not None
    assert "Hello from shop (default)" in get(shop.connection["url"])
    assert "Hello from shop child (child)" in get(shop.connection["child-url"])
    assert shop.connection["shared-url"] == shop.connection["child-url"] + "shared/"
    assert shop.root != shop.child and shop.root.parent == shop.child.parent
    hosting = next(
        p for p in our_node.client.computer().partitions if p.partition_id == shop.child.name
    )
    # the proxy names a shared instance after its requester too
    [shared] = hosting.slave_instance_list
    assert shared["slave_title"].endswith("shop shared")


def test_our_agent_keeps_the_plugin_promises_on_the_proxy(our_node: OurNode) -> None:
    assert run_instance(our_node.config, our_node.client, force=True).status == 0
    assert our_node.shop is not None
    results = plugin_results(our_node.shop.root)
    assert {name.removesuffix(".status.json") for name in results} == PLUGINS
    assert all(not result["result"]["failed"] for result in results.values())


# --- the reference agent against our master --------------------------------------------


@dataclass
class ReferenceNode:
    venv: Path
    config: Path
    root: Path
    master: TlsMaster
    client: SlapClient  # the computer's
    requester: SlapClient  # a user's
    computer: str
    url: str
    software: reference_env.NodeRun
    shop: Deployed | None = None
    shop_runs: list[reference_env.NodeRun] = field(default_factory=list)

    @property
    def store(self) -> MasterStore:
        return self.master.store

    def status(self, partition: Path) -> str:
        return self.store.partition_status(self.computer, partition.name)["text"]


def reference_run(venv: Path, command: str, config: Path) -> reference_env.NodeRun:
    argv = reference_env.reference(venv, command, config)
    return reference_env.run_node(argv, timeout=cookbook.BUILD_TIMEOUT)


@pytest.fixture(scope="module")
def reference_node(
    reference_venv: Path, master_databases: MasterDatabases
) -> Iterator[ReferenceNode]:
    """The reference agent on a node of our TLS master, the root `shop` requested and run
    until it converged (or `REFERENCE_RUNS` runs). The node has the computer's certificate;
    its recipes request and publish with their partition's, which the agent fetches.

    The master's database is PostgreSQL: a build this long runs once, and the reference
    agent meets our master on SQLite in test_agent_interop."""
    try:
        user = reference_env.node_user(reference_venv / "bin" / "python")
    except reference_env.Unavailable as exc:
        pytest.skip(str(exc))
    root = reference_env.public_tempdir("slapgrid-cookbook-")
    computer = "COMP-REF"
    try:
        with (
            master_databases.lend() as database,
            tls_master(root, computer, database=database) as master,
            master.node_client() as client,
            master.user_client() as requester,
        ):
            format_partitions(
                master.url,
                root,
                REFERENCE_PARTITIONS,
                computer=computer,
                credentials=master.computer,
            )
            cache = cookbook.cache_for(user)
            url = cookbook.cached_profile(root, cache)
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
            requester.supply(url)
            with cookbook.cache_lock(cache):
                software = reference_run(reference_venv, "software", config)
            node = ReferenceNode(
                reference_venv, config, root, master, client, requester, computer, url, software
            )
            try:
                if software.returncode == 0:
                    node.shop = converge_reference(node, "shop", node.shop_runs)
                yield node
            finally:
                reference_env.stop_supervisord(root / "instance")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def converge_reference(
    node: ReferenceNode,
    title: str,
    runs: list[reference_env.NodeRun],
    settle: bool = True,
    **parameters: str,
) -> Deployed | None:
    """`slapos node instance` until `title` published everything, as cron would run it.

    With `settle`, one more run if the last one failed: the reference checks promises as
    soon as it asked supervisord to start the services, so a check may find the server
    not listening yet; the node's next run deploys the partition again.
    """
    for _ in range(REFERENCE_RUNS):
        connection = node.requester.request(node.url, title, parameters=parameters).connection
        if connection.keys() >= PUBLISHED:
            while settle and runs[-1].returncode != 0 and len(runs) < REFERENCE_RUNS:
                runs.append(reference_run(node.venv, "instance", node.config))
            instance_root = node.root / "instance"
            return Deployed(
                connection,
                partition_of(node.client, instance_root, title),
                partition_of(node.client, instance_root, f"{title} child"),
            )
        runs.append(reference_run(node.venv, "instance", node.config))
    return None


def test_the_reference_builds_the_cookbook_release(reference_node: ReferenceNode) -> None:
    node = reference_node
    assert node.software.returncode == 0, node.software.output[-3000:]
    assert (node.root / "software" / software_hash(node.url) / ".completed").exists()


def test_the_reference_deploys_the_cookbook_release_on_our_master(
    reference_node: ReferenceNode,
) -> None:
    node = reference_node
    shop = node.shop
    runs = node.shop_runs
    assert shop is not None, "\n".join(run.output[-2000:] for run in runs)
    assert runs[-1].returncode == 0, "\n".join(run.output[-1500:] for run in runs)
    assert "Hello from shop (default)" in get(shop.connection["url"])
    assert "Hello from shop child (child)" in get(shop.connection["child-url"])
    assert shop.connection["shared-url"] == shop.connection["child-url"] + "shared/"
    assert node.status(shop.root) == "#access Instance correctly started"
    assert node.status(shop.child) == "#access Instance correctly started"
    hosting = next(
        p for p in node.client.computer().partitions if p.partition_id == shop.child.name
    )
    assert [s["slave_title"] for s in hosting.slave_instance_list] == ["shop shared"]


def test_the_reference_keeps_the_plugin_promises(reference_node: ReferenceNode) -> None:
    """The reference's launcher runs the SR's GenericPromise plugins: they pass, and their
    results have the shape slapgrid's must have."""
    shop = reference_node.shop
    assert shop is not None
    for partition in (shop.root, shop.child):
        results = plugin_results(partition)
        assert {name.removesuffix(".status.json") for name in results} == PLUGINS
        for result in results.values():
            assert set(result) == {"title", "name", "path", "execution-time", "result"}
            assert set(result["result"]) == {"type", "failed", "date", "message"}
            assert result["result"]["failed"] is False, result["result"]["message"]


def test_the_reference_reports_a_failing_plugin_promise_to_our_master(
    reference_node: ReferenceNode,
) -> None:
    """What slapgrid must do too (tests/integration/test_cookbook.py): the promise's
    message reaches the master as the partition's error, and no `.timestamp`."""
    node = reference_node
    port = str(free_port())
    runs: list[reference_env.NodeRun] = []
    broken = converge_reference(node, "broken", runs, settle=False, **{"promise-port": port})
    assert broken is not None, "\n".join(run.output[-2000:] for run in runs)
    run = reference_run(node.venv, "instance", node.config)
    assert run.returncode == 2, run.output[-3000:]
    status = node.status(broken.root)
    assert status.startswith("#error") and "nothing listens on" in status
    assert f":{port}" in status
    assert not (broken.root / ".timestamp").exists()
    assert node.status(broken.child) == "#access Instance correctly started"


def test_both_agents_leave_the_same_files_in_the_partitions(
    our_node: OurNode, reference_node: ReferenceNode
) -> None:
    ours, theirs = our_node.shop, reference_node.shop
    assert ours is not None and theirs is not None
    for name in ("root", "child"):
        our_files = partition_files(getattr(ours, name))
        their_files = partition_files(getattr(theirs, name))
        assert our_files == their_files, (name, our_files ^ their_files)
        assert {"etc/service/http-server", "srv/www/index.html", ".installed.cfg"} <= our_files
        assert {f"etc/plugin/{plugin}.py" for plugin in PLUGINS} <= our_files
