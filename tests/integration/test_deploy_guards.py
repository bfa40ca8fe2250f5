"""What a deployment must not do, and the reference's upkeep it must do, for real: the
embedded master over HTTP, real buildout deploying examples/hello, real supervisord.

- supervisord is never launched with nothing to supervise, and is launched when a partition
  has programs (a deployment, an offline start), unless that is forbidden;
- `instance_min_free_space` refuses a deployment as that partition's error;
- `.slapos-request-transaction-<pid>` lists only the current deployment's requests;
- `.slapgrid/log/instance.log` is rotated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest

from nodes import COMPUTER, SOFTWARE, Node
from slapgrid.exit_status import ExitStatus
from slapgrid.node import layout
from slapgrid.node.config import NodeConfig, parse_size
from slapgrid.node.instance.deployment import Deployment
from slapgrid.node.instance.run import run_instance
from slapgrid.node.instance.steps.buildout import buildout
from slapgrid.slap.client import SlapClient

pytestmark = pytest.mark.integration

PORT = "18947"  # not the example's default: other test modules may be serving that one

REQUEST_CHILD = """
[request-child]
# what the slap library's `request` does in an instance: list the requested title
recipe = slapos.recipe.build
init =
  import os
  directory = self.buildout['buildout']['directory']
  pid = self.buildout['slap-connection']['partition-id']
  with open(os.path.join(directory, '.slapos-request-transaction-' + pid), 'a') as f:
      f.write('child\\n')
"""


class RecordingClient(SlapClient):
    """The real client, remembering the related instances it sends to the master."""

    def __init__(self, url: str, computer_id: str) -> None:
        super().__init__(url, computer_id)
        self.related: list[tuple[str, list[str]]] = []

    def update_related_instances(self, partition_id: str, references: Sequence[str]) -> None:
        self.related.append((partition_id, list(references)))
        super().update_related_instances(partition_id, references)


def with_options(node: Node, **options: object) -> NodeConfig:
    return dataclasses.replace(node.config, **options)


def requested(node: Node) -> str:
    """The example requested on this test's own node, not yet deployed: its partition id."""
    node.request(port=PORT)
    return node.partition()


def deployed(node: Node) -> str:
    """The example requested and deployed, its service running: its partition id."""
    pid = requested(node)
    assert node.instance() == ExitStatus.OK
    return pid


def supervisord_launched(node: Node) -> bool:
    return node.supervisor.state() is not None or node.supervisor.paths.pid_file.exists()


def test_no_busy_partition_launches_no_supervisord(node: Node) -> None:
    assert node.instance() == ExitStatus.OK
    assert not supervisord_launched(node)
    offline = with_options(node, master_url="http://127.0.0.1:9/")
    with SlapClient(offline.master_url, COMPUTER) as client:
        assert run_instance(offline, client).status == ExitStatus.OFFLINE
    assert not supervisord_launched(node)  # nothing known to start offline either


def test_every_deployment_failing_before_supervise_launches_nothing(node: Node) -> None:
    root = node.config.instance_root / requested(node)
    root.chmod(0o700)  # not as format made it: refused by the prepare step
    try:
        assert node.instance() == ExitStatus.FAILED
    finally:
        root.chmod(0o750)
    assert not supervisord_launched(node)


def test_lack_of_space_is_the_partitions_error_and_launches_nothing(node: Node) -> None:
    pid = requested(node)
    cramped = with_options(node, instance_min_free_space=parse_size("10P", "option"))
    assert run_instance(cramped, node.client, force=True).status == ExitStatus.FAILED
    status = node.status_text(pid)
    assert status.startswith("#error")
    assert "option 'instance_min_free_space'" in status
    assert not (node.config.instance_root / pid / layout.TIMESTAMP).exists()
    assert not supervisord_launched(node)  # every partition failed before supervise


def test_first_partition_to_supervise_launches_supervisord_a_failure_leaves_it(
    node: Node,
) -> None:
    pid = requested(node)
    assert node.instance(force=True) == ExitStatus.OK
    daemon = node.supervisor.rpc.call("getPID")
    assert node.processes(pid) == ["hello-http-on-watch:RUNNING"]
    cramped = with_options(node, instance_min_free_space=parse_size("10P", "option"))
    assert run_instance(cramped, node.client, force=True).status == ExitStatus.FAILED
    assert node.supervisor.rpc.call("getPID") == daemon  # a running one is left alone
    assert node.processes(pid) == ["hello-http-on-watch:RUNNING"]


def test_master_hears_only_this_deployments_requests(node: Node) -> None:
    pid = requested(node)
    software = layout.software_dir(node.config.software_root, SOFTWARE)
    profile = software / "instance.cfg"
    original = profile.read_text()
    assert "parts =\n  directories\n" in original
    profile.write_text(
        original.replace("parts =\n  directories\n", "parts =\n  request-child\n  directories\n")
        + REQUEST_CHILD
    )
    try:
        with RecordingClient(node.server.url, COMPUTER) as client:
            for _ in range(2):
                assert run_instance(node.config, client, force=True).status == ExitStatus.OK
        assert client.related == [(pid, ["child"]), (pid, ["child"])]
    finally:
        profile.write_text(original)


def test_instance_log_is_rotated_keeping_a_few(node: Node) -> None:
    pid = deployed(node)
    partition = next(p for p in node.client.computer().partitions if p.partition_id == pid)
    job = Deployment(node.config, node.client, node.supervisor, partition)
    log = job.paths.log
    backups = [log.with_name(f"instance.log.{n}") for n in (1, 2, 3)]
    assert not backups[0].exists()  # under the 20 MB of the default, never rotated
    for _ in range(4):
        buildout(job, log_limit=1, log_backups=2)
    assert [path.exists() for path in backups] == [True, True, False]
    assert all(path.stat().st_size > 0 for path in (log, *backups[:2]))


def test_offline_start_launches_supervisord_for_known_partitions(node: Node) -> None:
    pid = deployed(node)
    node.supervisor.shutdown()  # a reboot, with the master out of reach
    offline = with_options(node, master_url="http://127.0.0.1:9/")
    with SlapClient(offline.master_url, COMPUTER) as client:
        assert run_instance(offline, client).status == ExitStatus.OFFLINE
    assert node.processes(pid) == ["hello-http-on-watch:RUNNING"]


def test_forbidden_launch_is_the_partitions_clear_error(node: Node) -> None:
    pid = requested(node)
    node.supervisor.shutdown()  # a node whose supervisord is someone else's to start
    forbidden = with_options(node, forbid_supervisord_automatic_launch=True)
    assert run_instance(forbidden, node.client, force=True).status == ExitStatus.FAILED
    assert "forbid_supervisord_automatic_launch" in node.status_text(pid)
    assert not supervisord_launched(node)
