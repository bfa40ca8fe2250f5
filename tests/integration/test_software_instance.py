"""The instance of examples/hello run offline by the real zc.buildout against a master on
127.0.0.1: the instance side talks HTTP to a real server answering with xml_marshaller
documents."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from xml_marshaller import xml_marshaller

from recording_server import Answer, RecordingServer
from slapgrid.node.buildout import BuildoutError, run_instance_buildout
from support.addresses import free_port
from support.software_releases import HELLO, make_config
from support.waiting import wait_for

pytestmark = pytest.mark.integration


def partition_document(computer_id: str, partition_id: str, parameters: dict) -> bytes:
    cls = type("ComputerPartition", (), {"__module__": "slapos.slap.slap"})
    partition = cls()
    partition.__dict__.update(
        _computer_id=computer_id,
        _partition_id=partition_id,
        _requested_state="started",
        _parameter_dict=parameters,
        _connection_dict={},
        _instance_guid=f"{computer_id}-{partition_id}",
    )
    return xml_marshaller.dumps(partition)


def write_partition_profile(
    partition: Path, software: Path, server_url: str, partition_id: str
) -> None:
    """P/buildout.cfg as the node agent writes it (reference §3.4): template + tail."""
    partition.mkdir(mode=0o750)
    partition.chmod(0o750)
    tail = textwrap.dedent(
        f"""
        [buildout]
        bin-directory = ${{buildout:directory}}/sbin
        offline = true

        [slap-connection]
        computer-id = COMP-TEST
        partition-id = {partition_id}
        server-url = {server_url}
        software-release-url = {HELLO}
        key-file =
        cert-file =
        requested-state = started
        """
    )
    text = (software / "instance.cfg").read_text() + "\n" + tail
    (partition / "buildout.cfg").write_text(text)
    (partition / "software_release").symlink_to(software)


def test_hello_instance_runs_offline_and_publishes(hello: SimpleNamespace, tmp_path: Path) -> None:
    port = free_port()
    parameters = {
        "ip_list": [("lo", "::1"), ("lo", "127.0.0.1")],
        "port": str(port),
        "instance_title": "Hello <test>",
    }
    config = make_config(tmp_path, software_root=hello.config.software_root)
    partition = config.instance_root / "slappart0"
    with RecordingServer(
        routes={
            "registerComputerPartition": Answer(
                body=partition_document("COMP-TEST", "slappart0", parameters)
            ),
            "setComputerPartitionConnectionXml": Answer(body=b"done"),
        }
    ) as master:
        write_partition_profile(partition, hello.software, master.url, "slappart0")
        result = run_instance_buildout(config, partition, hello.software)
    assert result.ok

    register, publish = master.requests
    assert register.method == "GET" and register.query == {
        "computer_reference": "COMP-TEST",
        "computer_partition_reference": "slappart0",
    }
    assert publish.method == "POST" and publish.path == "/setComputerPartitionConnectionXml"
    assert publish.headers["authorization"] == (
        "X-SlapPartition computer_id=COMP-TEST, computer_partition_id=slappart0"
    )
    assert publish.form["computer_id"] == "COMP-TEST"
    assert publish.form["computer_partition_id"] == "slappart0"
    assert publish.form["slave_reference"] == "None"
    url = f"http://127.0.0.1:{port}/"
    assert xml_marshaller.loads(publish.form["connection_xml"].encode()) == {"url": url}

    service = partition / "etc" / "service" / "hello-http"
    promise = partition / "etc" / "promise" / "check-hello-http"
    assert os.access(service, os.X_OK) and os.access(promise, os.X_OK)
    assert "Hello &lt;test&gt;" in (partition / "srv" / "www" / "index.html").read_text()
    # slapos.recipe.build (a PyPI egg of the software) served the offline instance run
    assert "recipe = slapos.recipe.build:mkdirectory" in (partition / ".installed.cfg").read_text()

    def promise_passes() -> bool:
        return subprocess.run([promise], capture_output=True).returncode == 0

    assert not promise_passes()
    server = subprocess.Popen([service], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(promise_passes, what="the promise to see the service answer")
    finally:
        server.terminate()
        server.wait(10)
    assert not promise_passes()


def test_without_develop_egg_links_offline_instances_miss_pypi_eggs(
    hello: SimpleNamespace, tmp_path: Path
) -> None:
    """The pitfall itself: zc.buildout 6 offline mode does not see pip-made eggs."""
    partition = tmp_path / "partition"
    partition.mkdir()
    (tmp_path / "no-links").mkdir()
    (partition / "buildout.cfg").write_text(
        textwrap.dedent(
            f"""
            [buildout]
            parts = directories
            eggs-directory = {hello.software / "eggs"}
            develop-eggs-directory = {tmp_path / "no-links"}
            offline = true
            [directories]
            recipe = slapos.recipe.build:mkdirectory
            data = ${{buildout:directory}}/data
            """
        )
    )
    config = make_config(tmp_path)
    with pytest.raises(BuildoutError) as failure:
        run_instance_buildout(config, partition, hello.software)
    assert "We don't have a distribution for slapos.recipe.build" in failure.value.output
