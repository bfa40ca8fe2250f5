"""The master as its commands run it: `slapgrid master start` killed with -9, and the user
and master commands against a running master.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from master_site import partition, served, small_computer, wait_ready
from recording_server import Answer, RecordingServer
from slapgrid.cli.master_cmds import master_group
from slapgrid.cli.user_cmds import request_command, show_command, supply_command
from slapgrid.slap.client import SlapClient
from support.addresses import free_port

pytestmark = pytest.mark.integration

COMP = "COMP-CLI"
SR = "https://example.com/software/web/software.cfg"


def start_master_process(config: Path) -> subprocess.Popen[bytes]:
    code = "from slapgrid.cli.master_cmds import master_group; master_group()"
    return subprocess.Popen(
        [sys.executable, "-c", code, "start", "--cfg", str(config), "--insecure"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_kill_9_after_acknowledged_writes_loses_nothing(tmp_path: Path, database: str) -> None:
    port = free_port()
    config = tmp_path / "slapos-proxy.cfg"
    config.write_text(
        f"[slapos]\ncomputer_id = {COMP}\n[slapproxy]\nhost = 127.0.0.1\nport = {port}\n"
        f"database_uri = {database}\npki_dir = {tmp_path / 'pki'}\n"
        f"cache_dir = {tmp_path / 'cache'}\n"
    )
    url = f"http://127.0.0.1:{port}/"
    process = start_master_process(config)
    try:
        wait_ready(url, process)
        with SlapClient(url, COMP) as client:
            client.load_computer_configuration(small_computer(COMP, 10))
            for i in range(10):
                client.supply(f"{SR}?v={i}")
                client.request(SR, f"instance-{i}", parameters={"i": i})
                client.set_connection(f"slappart{i}", {"url": f"http://{i}"})
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    process = start_master_process(config)
    try:
        wait_ready(url, process)
        with SlapClient(url, COMP) as client:
            computer = client.computer()
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(10)
    assert len(computer.software_releases) == 10
    assert [p.connection for p in computer.partitions] == [
        {"url": f"http://{i}"} for i in range(10)
    ]
    assert [p.parameters["i"] for p in computer.partitions] == [str(i) for i in range(10)]


def test_user_and_master_commands(
    tmp_path: Path, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with served(tmp_path, COMP, database=database) as master, SlapClient(master.url, COMP) as node:
        monkeypatch.setenv("SLAPGRID_MASTER_URL", master.url)
        monkeypatch.setenv("SLAPOS_CLIENT_CONFIGURATION", str(tmp_path / "absent.cfg"))
        (tmp_path / "absent.cfg").write_text("[slapos]\n")
        node.load_computer_configuration(small_computer(COMP, 2))
        runner = CliRunner()

        result = runner.invoke(supply_command, [SR, COMP])
        assert result.exit_code == 0 and "available" in result.output
        parameters = tmp_path / "parameters.json"
        parameters.write_text('{"port": 8080, "names": ["a", "b"]}')
        result = runner.invoke(request_command, ["web", SR, "--parameters-json", str(parameters)])
        assert result.exit_code == 0, result.output
        assert "no connection parameters published yet" in result.output
        deployed = partition(node.computer(), "slappart0")
        assert (
            deployed.parameters["_"]
            == '{\n  "names": [\n    "a",\n    "b"\n  ],\n  "port": 8080\n}'
        )
        published = {"_": '{"url": "https://web", "ports": [1, 2]}'}
        node.set_connection("slappart0", published)

        result = runner.invoke(show_command, ["web", "--json"])
        assert result.exit_code == 0, result.output
        shown = json.loads(result.output)
        assert shown["connection"] == {"url": "https://web", "ports": [1, 2]}
        assert shown["parameters"] == {"port": 8080, "names": ["a", "b"]}
        assert (shown["partition"], shown["software_release"]) == ("slappart0", SR)
        listed = json.loads(runner.invoke(show_command, ["--json"]).output)
        assert listed == [shown]
        table = runner.invoke(show_command, []).output
        assert all(word in table for word in ("web", "started", "slappart0"))
        result = runner.invoke(show_command, ["nope"])
        assert result.exit_code != 0 and "no instance 'nope'" in str(result.exception)
        result = runner.invoke(request_command, ["[b]x", SR, "-p", "note=[buildout] [/b]"])
        assert result.exit_code == 0, result.output
        shown_text = runner.invoke(show_command, ["[b]x"]).output
        assert "[b]x: started" in shown_text and "[buildout] [/b]" in shown_text
        result = runner.invoke(request_command, ["x", SR, "--parameter", "novalue"])
        assert result.exit_code == 2

        result = runner.invoke(master_group, ["show", "--json", "--database", master.store.url])
        assert result.exit_code == 0, result.output
        snapshot = json.loads(result.output)
        assert [s["url"] for s in snapshot["software"]] == [SR]
        assert snapshot["partitions"][0]["connection"] == {
            "_": '{"url": "https://web", "ports": [1, 2]}'
        }
        result = runner.invoke(master_group, ["show", "--database", master.store.url])
        assert result.exit_code == 0 and "slappart0" in result.output


def test_show_explains_masters_that_cannot_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One line, no traceback: a master without the listing, and the proxy's 403."""
    (tmp_path / "client.cfg").write_text("[slapos]\n")
    monkeypatch.setenv("SLAPOS_CLIENT_CONFIGURATION", str(tmp_path / "client.cfg"))
    forbidden = Answer(403, b'{"status": 403, "title": "No instance tree x found."}')
    with RecordingServer(routes={"slapos.get.v0.instance_tree": forbidden}) as server:
        monkeypatch.setenv("SLAPGRID_MASTER_URL", server.url)
        listed = CliRunner().invoke(show_command, [])
        shown = CliRunner().invoke(show_command, ["x"])
    assert listed.exit_code == 1
    assert str(listed.exception) == (
        f"{server.url} does not list instances (no jIO instance_tree_list)"
    )
    assert (shown.exit_code, str(shown.exception)) == (1, f"no instance 'x' on {server.url}")
