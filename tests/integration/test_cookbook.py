"""The cookbook Software Release (tests/software/cookbook) under slapgrid and its master.

Built once per session from PyPI, its eggs cached across sessions (support/cookbook.py);
then one node deploys it: the root serves its page and publishes its URL, requests a
`child` instance (deployed on another partition of this node) and a shared instance the
child hosts; both answer through the master. Its GenericPromise plugins, run through the
SR's own promise launcher, pass, and a failing one reaches the master.

The master serves HTTPS: the agent presents the computer's certificate and verifies the
master against its CA; the recipes request and publish with their partition's certificate.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from nodes import COMPUTER, get
from slapgrid.master.pki.identity import Identity
from slapgrid.slap.client import SlapClient
from slapgrid.slap.errors import HTTPStatusError
from support import cookbook
from support.addresses import free_port
from support.waiting import wait_for

pytestmark = pytest.mark.integration

CONVERGE_TIMEOUT = 300.0  # s: three partitions, each buildout a few seconds, on a busy host
PUBLISHED = {"url", "child-url", "shared-url"}
RESULT_KEYS = {"title", "name", "path", "execution-time", "result"}
PLUGINS = {"check-http-listening", "check_http_page"}


@pytest.fixture(scope="module")
def node(
    cookbook_software: cookbook.Built, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[cookbook.CookbookNode]:
    """One node for the module: each test deploys its own root (three partitions each)."""
    root = tmp_path_factory.mktemp("cookbook-node")
    with cookbook.cookbook_node(root, cookbook_software, partitions=6) as running:
        yield running


def converged(node: cookbook.CookbookNode, title: str, **parameters: Any) -> dict[str, str]:
    """Instance runs until the root `title` published its URL, its child's, its shared
    instance's: the root's first buildout fails until the child has published."""

    def published() -> dict[str, str] | None:
        connection = node.request(title, **parameters).connection
        if connection.keys() >= PUBLISHED:
            return connection
        node.instance()
        return None

    return wait_for(published, CONVERGE_TIMEOUT, f"{title} to publish {sorted(PUBLISHED)}")


@pytest.fixture(scope="module")
def deployed(node: cookbook.CookbookNode) -> Iterator[dict[str, Any]]:
    """The root `shop` converged: its connection and its partitions."""
    connection = converged(node, "shop")
    yield {
        "connection": connection,
        "root": node.partition("shop"),
        "child": node.partition("shop child"),
    }


def test_the_cookbook_release_builds_from_pypi_and_links_its_eggs(
    cookbook_software: cookbook.Built,
) -> None:
    assert cookbook_software.status == 0
    software = cookbook_software.directory
    assert (software / ".completed").exists()
    profile = (software / "instance.cfg").read_text()
    assert "{{" not in profile and "eggs-directory = /" in profile  # rendered by jinja2
    links = {link.stem for link in (software / "develop-eggs").glob("*.egg-link")}
    assert {"slapos.cookbook", "slapos.core", "slapos.recipe.template"} <= links


def test_root_serves_and_publishes_its_child_and_shared_instance(
    node: cookbook.CookbookNode, deployed: dict[str, Any]
) -> None:
    connection = deployed["connection"]
    assert "Hello from shop (default)" in get(connection["url"])
    assert "Hello from shop child (child)" in get(connection["child-url"])
    assert connection["shared-url"] == connection["child-url"] + "shared/"
    root, child = deployed["root"], deployed["child"]
    assert root != child and root.parent == child.parent  # two partitions of this node
    assert (root / "etc" / "service" / "http-server").exists()
    assert (child / "etc" / "service" / "http-server").exists()


def test_recipes_call_the_master_with_their_partitions_certificate(
    node: cookbook.CookbookNode, deployed: dict[str, Any]
) -> None:
    """What the root requested and published went through its own certificate, which
    names it and acts for it alone."""
    assert node.config.master_url.startswith("https://")
    root, child = deployed["root"], deployed["child"]
    authority = node.master.server.authority
    assert authority is not None
    repository = node.config.certificate_repository_path
    assert repository is not None
    for partition in (root, child):
        key, cert = repository / f"{partition.name}.key", repository / f"{partition.name}.crt"
        assert f"key-file = {key}\n" in (partition / "buildout.cfg").read_text()
        identity = authority.identity_of(cert.read_bytes())
        assert identity == Identity.for_partition(COMPUTER, partition.name)
    key, cert = repository / f"{root.name}.key", repository / f"{root.name}.crt"
    with SlapClient(
        node.config.master_url, COMPUTER, key_file=key, cert_file=cert, ca_file=authority.ca_file
    ) as as_root:
        as_root.set_connection(root.name, deployed["connection"])  # itself: accepted
        with pytest.raises(HTTPStatusError) as refused:
            as_root.set_connection(child.name, {"url": "http://elsewhere/"})
    assert refused.value.status == 403


def test_the_child_hosts_the_shared_instance(
    node: cookbook.CookbookNode, deployed: dict[str, Any]
) -> None:
    child = deployed["child"]
    hosting = next(p for p in node.client.computer().partitions if p.partition_id == child.name)
    assert hosting.software_type == "child"
    shared = hosting.slave_instance_list
    assert [s["slave_title"] for s in shared] == ["shop shared"]
    assert shared[0]["path"] == "shared/"  # the root's `config-path`


def test_plugin_promises_are_written_with_their_configuration(deployed: dict[str, Any]) -> None:
    plugins = deployed["root"] / "etc" / "plugin"
    assert {p.stem for p in plugins.glob("*.py") if p.stem != "__init__"} == PLUGINS
    listening = (plugins / "check-http-listening.py").read_text()
    assert "extra_config_dict" in listening and "'other-port': ''" in listening
    assert "check_port_listening.py" in listening  # the SR's GenericPromise, run from its file


def test_plugin_promises_pass_and_leave_results_of_the_reference_shape(
    node: cookbook.CookbookNode, deployed: dict[str, Any]
) -> None:
    root, child = deployed["root"], deployed["child"]
    assert node.instance(force=True, only=[root.name, child.name]) == 0
    assert (root / ".timestamp").exists()
    results = {
        path.name: json.loads(path.read_text())
        for path in (root / ".slapgrid" / "promise" / "result").glob("*.status.json")
    }
    assert set(results) == {f"{title}.status.json" for title in PLUGINS}
    for result in results.values():
        assert set(result) == RESULT_KEYS
        assert set(result["result"]) == {"type", "failed", "date", "message"}
        assert result["result"]["failed"] is False
        assert result["name"] == f"{result['title']}.py"
        assert result["path"] == str(root / "etc" / "plugin" / result["name"])


def test_a_failing_plugin_promise_reaches_the_master_and_blocks_the_timestamp(
    node: cookbook.CookbookNode,
) -> None:
    port = str(free_port())
    converged(node, "broken", **{"promise-port": port})
    root = node.partition("broken")
    node.instance()
    status = node.status_text(root)
    assert status.startswith("#error")
    assert "nothing listens on" in status and f":{port}" in status
    assert not (root / ".timestamp").exists()
