"""Every command ends with the status the README's table promises, in one line, no trace.

The real command line runs in a child process against a real master over HTTP on
127.0.0.1, a closed port, or a real supervisord.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nodes import embedded_master, node_flags
from recording_server import Answer, RecordingServer
from reference_env import free_port
from slapgrid.exit_status import ExitStatus
from slapgrid.master.server import MasterServer
from slapgrid.node.supervisor.control import Supervisor
from slapgrid.slap import marshal
from slapgrid.slap.client import SlapClient
from support.commands import one_line_error, slapgrid

pytestmark = pytest.mark.integration

COMP = "COMP-EXIT"


@pytest.fixture
def master(tmp_path: Path) -> Iterator[MasterServer]:
    with embedded_master(tmp_path, COMP) as server:
        yield server


@pytest.mark.parametrize("command", ["software", "report", "plan", "software --dry-run"])
def test_unreachable_master_is_offline(tmp_path: Path, command: str) -> None:
    closed = f"http://127.0.0.1:{free_port()}/"
    done = slapgrid(*command.split(), *node_flags(closed, tmp_path, COMP))
    assert done.returncode == ExitStatus.OFFLINE, done.stderr
    assert "cannot connect" in one_line_error(done)


@pytest.mark.parametrize("command", ["software", "report", "plan"])
def test_master_answering_503_is_offline(tmp_path: Path, command: str) -> None:
    with RecordingServer(routes={"getFullComputerInformation": Answer(503, b"down")}) as down:
        done = slapgrid(command, *node_flags(down.url, tmp_path, COMP))
    assert done.returncode == ExitStatus.OFFLINE, done.stderr
    assert "503" in one_line_error(done)


def test_classic_run_with_unreachable_master_is_offline(tmp_path: Path) -> None:
    """software and report cannot work, instance starts what supervisord knows: 3."""
    closed = f"http://127.0.0.1:{free_port()}/"
    try:
        done = slapgrid(*node_flags(closed, tmp_path, COMP))
    finally:
        Supervisor(tmp_path / "instance").shutdown()
    assert done.returncode == ExitStatus.OFFLINE, done.stderr
    assert "Traceback" not in done.stderr
    assert "master unreachable" in done.stderr


@pytest.mark.parametrize("url", ["master.example.com", "ftp://h/", "http://", "http://h:99999/"])
@pytest.mark.parametrize("command", ["software", "instance", "report", "plan"])
def test_bad_master_url_flag_is_a_usage_error_naming_it(
    tmp_path: Path, command: str, url: str
) -> None:
    done = slapgrid(command, *node_flags(url, tmp_path, COMP))
    assert done.returncode == ExitStatus.USAGE, done.stderr
    assert "--master-url" in one_line_error(done)
    assert not (tmp_path / "instance" / "etc").exists()  # no supervisord was set up


def test_bad_master_url_in_the_file_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    flags = node_flags("unused", tmp_path, COMP)
    configuration = tmp_path / "slapos.cfg"
    configuration.write_text(
        "[slapos]\nmaster_url = slap.example.com:80\ncomputer_id = C\n"
        f"instance_root = {flags[5]}\nsoftware_root = {flags[7]}\n"
    )
    for argv in (["--cfg", str(configuration)], ["software", "--cfg", str(configuration)]):
        done = slapgrid(*argv)
        assert done.returncode == ExitStatus.USAGE, done.stderr
        assert "option 'master_url'" in one_line_error(done)


def test_only_sr_the_master_does_not_list_is_a_usage_error(
    tmp_path: Path, master: MasterServer
) -> None:
    listed = str(tmp_path / "listed.cfg")
    with SlapClient(master.url, COMP) as client:
        client.supply(listed)
    before = master.store.snapshot()
    flags = node_flags(master.url, tmp_path, COMP)
    for dry_run in ([], ["--dry-run"]):
        done = slapgrid("software", "--only-sr", "/typo/software.cfg", *dry_run, *flags)
        assert done.returncode == ExitStatus.USAGE, done.stderr
        error = one_line_error(done)
        assert "--only-sr" in error and "/typo/software.cfg" in error
    assert list((tmp_path / "software").iterdir()) == []  # not even the listed one was built
    assert master.store.snapshot() == before  # nothing reported


def test_only_cp_the_master_does_not_list_is_a_usage_error_too(
    tmp_path: Path, master: MasterServer
) -> None:
    flags = node_flags(master.url, tmp_path, COMP)
    try:
        for dry_run in ([], ["--dry-run"]):
            done = slapgrid("instance", "--only-cp", "slappart99", *dry_run, *flags)
            assert done.returncode == ExitStatus.USAGE, done.stderr
            error = one_line_error(done)
            assert "--only-cp" in error and "slappart99" in error
    finally:
        Supervisor(tmp_path / "instance").shutdown()


def test_supervisorctl_statuses_do_not_collide_with_ours(
    tmp_path: Path, master: MasterServer
) -> None:
    flags = node_flags(master.url, tmp_path, COMP)
    try:
        assert slapgrid("supervisorctl", *flags, "status").returncode == ExitStatus.OK
        group = tmp_path / "instance" / "etc" / "supervisord.conf.d" / "idle.conf"
        group.write_text("[program:idle]\ncommand = sleep 60\nautostart = false\n")
        assert slapgrid("supervisorctl", *flags, "update").returncode == ExitStatus.OK
        # supervisorctl says 3 (LSB "not running"): that would read as our OFFLINE
        not_running = slapgrid("supervisorctl", *flags, "status", "idle")
        assert "STOPPED" in not_running.stdout
        assert not_running.returncode == ExitStatus.SUPERVISORCTL + 3 == 23
        unknown = slapgrid("supervisorctl", *flags, "status", "nosuchprogram")
        assert unknown.returncode == ExitStatus.SUPERVISORCTL + 4, unknown.stdout
    finally:
        Supervisor(tmp_path / "instance").shutdown()


BAD_URLS = ["", " ", "http://x/a b.cfg", "http://x/s.cfg\n", "http://x/;reboot", "$(id)", "\x00"]


@pytest.mark.parametrize("url", BAD_URLS)
def test_master_refuses_a_software_release_url_nodes_refuse(master: MasterServer, url: str) -> None:
    before = master.store.snapshot()
    with httpx.Client(base_url=master.url, timeout=10) as http:
        supply = http.post("supplySupply", data={"url": url, "computer_id": COMP})
        request = http.post(
            "requestComputerPartition",
            data={
                "software_release": url,
                "software_type": "default",
                "partition_reference": "x",
                "state": marshal.dumps(None).decode(),
                "shared_xml": marshal.dumps(False).decode(),
            },
        )
    for answer in (supply, request):
        assert answer.status_code == 400, answer.text
        # a character XML cannot carry is refused at the door, before the URL rule
        said = "characters XML cannot carry" if url == "\x00" else "software release URL"
        assert said in answer.text
    assert master.store.snapshot() == before
