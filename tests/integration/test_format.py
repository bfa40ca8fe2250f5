"""`slapgrid format` for real: directories, files, users (as root) and registration over HTTP."""

from __future__ import annotations

import grp
import json
import logging
import os
import pwd
import secrets
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recording_server import Answer, RecordingServer
from slapgrid.master.server import MasterServer
from slapgrid.master.storage import MasterStore
from slapgrid.node.format.register import RegistrationError
from slapgrid.node.format.run import run_format
from slapgrid.node.format.steps import EnsureAddress, EnsureRoute, FormatError
from slapgrid.node.identity import Identity
from slapgrid.node.instance.partition import check_partition
from slapgrid.slap import marshal
from slapgrid.slap.client import SlapClient

pytestmark = pytest.mark.integration

LOAD = "loadComputerConfigurationFromXML"


@pytest.fixture
def master() -> Iterator[RecordingServer]:
    with RecordingServer(routes={LOAD: Answer(200, b"")}) as server:
        yield server


def options(tmp_path: Path, url: str, amount: int = 2, **extra: Any) -> dict[str, Any]:
    return {
        "master_url": url,
        "computer_id": "COMP-FMT",
        "instance_root": str(tmp_path / "instance"),
        "software_root": str(tmp_path / "software"),
        "partition_amount": amount,
        "alter_user": False,
        **extra,
    }


def snapshot(root: Path) -> dict[str, tuple[int, int, int, bytes]]:
    """Every path under root with mtime, ctime, mode and content: any change shows."""
    result = {}
    for path in sorted([root, *root.rglob("*")]):
        status = path.lstat()
        content = path.read_bytes() if path.is_file() else b""
        result[str(path)] = (status.st_mtime_ns, status.st_ctime_ns, status.st_mode, content)
    return result


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def registered(server: RecordingServer) -> list[dict[str, Any]]:
    return [marshal.loads(r.form["xml"]) for r in server.requests if r.path.endswith(LOAD)]


def test_rootless_format_creates_partitions_and_registers(
    tmp_path: Path, master: RecordingServer
) -> None:
    assert run_format(None, options(tmp_path, master.url, 3)) == 0
    instance, software = tmp_path / "instance", tmp_path / "software"
    assert (mode(instance), mode(software)) == (0o755, 0o755)
    saved = json.loads((instance / ".slapgrid" / "computer.json").read_text())
    for index, partition in enumerate(saved["partition_list"]):
        path = instance / f"slappart{index}"
        assert partition["path"] == str(path)
        assert check_partition(path, os.geteuid()) == []
        resource = path / ".slapos-resource"
        assert mode(resource) == 0o644
        assert json.loads(resource.read_text()) == partition
        assert partition["user"]["name"] == pwd.getpwuid(os.geteuid()).pw_name
    [request] = master.requests
    assert request.method == "POST"
    assert set(request.form) == {"xml"}
    assert marshal.loads(request.form["xml"]) == saved
    assert saved["reference"] == "COMP-FMT"
    assert [p["address_list"][0]["addr"] for p in saved["partition_list"]] == [
        "127.1.0.2",
        "127.1.0.3",
        "127.1.0.4",
    ]


def test_second_run_changes_nothing(
    tmp_path: Path, master: RecordingServer, caplog: pytest.LogCaptureFixture
) -> None:
    run_format(None, options(tmp_path, master.url))
    before = snapshot(tmp_path)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="slapgrid.node.format"):
        assert run_format(None, options(tmp_path, master.url)) == 0
    assert snapshot(tmp_path) == before
    messages = [r.getMessage() for r in caplog.records]
    assert "format: nothing to change" in messages
    assert not [m for m in messages if m.startswith(("format: create", "format: write"))]
    first, second = registered(master)  # registered again: the master may have been reset
    assert first == second


def test_growing_keeps_existing_partitions_untouched(
    tmp_path: Path, master: RecordingServer
) -> None:
    run_format(None, options(tmp_path, master.url, 2))
    kept = snapshot(tmp_path / "instance" / "slappart1")
    run_format(None, options(tmp_path, master.url, 4))
    assert snapshot(tmp_path / "instance" / "slappart1") == kept
    small, large = registered(master)
    assert large["partition_list"][:2] == small["partition_list"]
    assert check_partition(tmp_path / "instance" / "slappart3", os.geteuid()) == []


def test_shrinking_is_refused_and_changes_nothing(tmp_path: Path, master: RecordingServer) -> None:
    run_format(None, options(tmp_path, master.url, 3))
    (tmp_path / "instance" / "slappart2" / ".timestamp").write_text("123")
    before = snapshot(tmp_path)
    with pytest.raises(FormatError) as caught:
        run_format(None, options(tmp_path, master.url, 1))
    assert "slappart1 (free)" in str(caught.value)
    assert "slappart2 (in use: .timestamp)" in str(caught.value)
    assert caught.value.exit_code == 1
    assert snapshot(tmp_path) == before
    assert len(master.requests) == 1


def test_wrong_modes_are_repaired(tmp_path: Path, master: RecordingServer) -> None:
    run_format(None, options(tmp_path, master.url, 1))
    partition = tmp_path / "instance" / "slappart0"
    partition.chmod(0o777)
    (partition / ".slapos-resource").write_text("{}")
    computer_json = tmp_path / "instance" / ".slapgrid" / "computer.json"
    computer_json.chmod(0o600)
    assert check_partition(partition, None) == [f"{partition} has mode 0777, expected 0750"]
    run_format(None, options(tmp_path, master.url, 1))
    assert check_partition(partition, None) == []
    assert mode(computer_json) == 0o644
    saved = registered(master)[-1]["partition_list"][0]
    assert json.loads((partition / ".slapos-resource").read_text()) == saved


def test_dry_run_prints_the_plan_and_changes_nothing(
    tmp_path: Path, master: RecordingServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_format(None, options(tmp_path, master.url, 2), dry_run=True) == 0
    out = capsys.readouterr().out
    assert f"would create directory {tmp_path / 'instance' / 'slappart1'} (0750)" in out
    assert "slappart0: user" in out and "127.1.0.2" in out
    assert list(tmp_path.iterdir()) == []
    assert master.requests == []
    run_format(None, options(tmp_path, master.url, 2))
    capsys.readouterr()
    run_format(None, options(tmp_path, master.url, 3), dry_run=True)
    out = capsys.readouterr().out
    assert "would create directory" in out and "slappart2" in out
    assert "slappart0 (0750)" not in out
    assert not (tmp_path / "instance" / "slappart2").exists()


def test_dry_run_as_root_plans_users_and_owners_without_root(
    tmp_path: Path, master: RecordingServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """The root branch of the command, reached through an injected identity."""
    prefix = f"sgtest{secrets.token_hex(3)}"
    flags = options(
        tmp_path,
        master.url,
        1,
        alter_user=None,
        user_base_name=f"{prefix}u",
        software_user=f"{prefix}s",
    )
    root = Identity("root", 0, 0)
    assert run_format(None, flags, dry_run=True, identity=root) == 0
    out = capsys.readouterr().out.splitlines()
    partition = tmp_path / "instance" / "slappart0"
    for line in (
        f"would create group {prefix}s",
        f"would create user {prefix}s (home {tmp_path / 'software'})",
        f"would create user {prefix}u0 (home {partition})",
        f"would chown {partition} to {prefix}u0",
    ):
        assert line in out
    assert [line for line in out if line.startswith(f"  slappart0: user {prefix}u0, ")]
    assert list(tmp_path.iterdir()) == []
    assert master.requests == []
    assert not [e for e in pwd.getpwall() if e.pw_name.startswith(prefix)]


def test_master_failure_is_exit_2_after_formatting(tmp_path: Path) -> None:
    with (
        RecordingServer(routes={LOAD: Answer(500, b"database is down")}) as server,
        pytest.raises(RegistrationError) as caught,
    ):
        run_format(None, options(tmp_path, server.url, 1))
    message = str(caught.value)
    assert message.startswith("could not register with the master: 500 from ")
    assert "\n" not in message
    assert caught.value.exit_code == 2
    assert check_partition(tmp_path / "instance" / "slappart0", None) == []
    assert (tmp_path / "instance" / ".slapgrid" / "computer.json").is_file()


def test_unknown_computer_is_explained(tmp_path: Path) -> None:
    with (
        RecordingServer(routes={LOAD: Answer(404, b"no such computer")}) as server,
        pytest.raises(RegistrationError, match="does not know computer COMP-FMT"),
    ):
        run_format(None, options(tmp_path, server.url, 1))


def test_configuration_file_sections(tmp_path: Path, master: RecordingServer) -> None:
    cfg = tmp_path / "slapos.cfg"
    cfg.write_text(
        "[slapformat]\npartition_amount = 1\npartition_base_name = part\n"
        "ipv6_prefix = 2001:db8:77::/64\nalter_user = false\n"
        f"computer_json = {tmp_path}/state/computer.json\n"
        f"[slapos]\npartition_amount = 2\nmaster_url = {master.url}\ncomputer_id = COMP-CFG\n"
        f"instance_root = {tmp_path}/i\nsoftware_root = {tmp_path}/s\n"
    )
    assert run_format(cfg, {"partition_amount": None}) == 0
    [definition] = registered(master)
    assert [p["reference"] for p in definition["partition_list"]] == ["part0", "part1"]
    assert definition["address"] == "2001:db8:77::1"
    assert definition["partition_list"][1]["address_list"][1]["addr"] == "2001:db8:77::3"
    assert json.loads((tmp_path / "state" / "computer.json").read_text()) == definition


def test_registers_with_the_embedded_master(tmp_path: Path) -> None:
    store = MasterStore(tmp_path / "master.db")
    try:
        with MasterServer(store, insecure=True) as server:
            run_format(None, options(tmp_path, server.url, 2))
            run_format(None, options(tmp_path, server.url, 3))
            with SlapClient(server.url, "COMP-FMT") as client:
                computer = client.computer()
        snapshot_ = store.snapshot()
    finally:
        store.close()
    assert sorted(p.partition_id for p in computer.partitions) == [
        "slappart0",
        "slappart1",
        "slappart2",
    ]
    [row] = [c for c in snapshot_["computers"] if c["reference"] == "COMP-FMT"]
    saved = json.loads((tmp_path / "instance" / ".slapgrid" / "computer.json").read_text())
    assert row["address"] == saved["address"]
    assert row["partitions"] == 3


def test_network_steps_only_read_the_host_in_a_dry_run() -> None:
    """The host network is never changed by tests; a dry run reads it with psutil and ip."""
    assert EnsureAddress("lo", "127.0.0.1/8").apply(dry_run=True) == []
    missing = EnsureAddress("lo", "127.1.99.99/32")
    assert missing.apply(dry_run=True) == ["add address 127.1.99.99/32 on lo"]
    assert missing.apply(dry_run=True) == ["add address 127.1.99.99/32 on lo"]
    if shutil.which("ip", path=os.pathsep.join([os.environ["PATH"], "/usr/sbin", "/sbin"])) is None:
        pytest.skip("iproute2 is not installed")
    route = EnsureRoute("fd00:5a:9::/80", "lo", local=True)
    assert route.apply(dry_run=True) == ["route local fd00:5a:9::/80 dev lo"]


# --- as root: real users and groups ------------------------------------------------------


def _remove_accounts(prefix: str) -> None:
    for entry in pwd.getpwall():
        if entry.pw_name.startswith(prefix):
            subprocess.run(["userdel", entry.pw_name], capture_output=True, check=False)
    for group in grp.getgrall():
        if group.gr_name.startswith(prefix):
            subprocess.run(["groupdel", group.gr_name], capture_output=True, check=False)


@pytest.fixture
def account_prefix() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("creating users and groups needs root")
    prefix = f"sgtest{secrets.token_hex(3)}"
    yield prefix
    _remove_accounts(prefix)
    assert not [e for e in pwd.getpwall() if e.pw_name.startswith(prefix)]


def test_as_root_creates_users_groups_and_owners(
    tmp_path: Path,
    master: RecordingServer,
    account_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    software_user, user_base = f"{account_prefix}s", f"{account_prefix}u"
    flags = options(
        tmp_path,
        master.url,
        2,
        alter_user=None,  # the default: on, since we are root
        user_base_name=user_base,
        software_user=software_user,
    )
    assert run_format(None, flags) == 0
    software = pwd.getpwnam(software_user)
    assert software.pw_dir == str(tmp_path / "software")
    status = (tmp_path / "software").stat()
    assert (status.st_uid, status.st_gid) == (software.pw_uid, software.pw_gid)
    assert grp.getgrgid(software.pw_gid).gr_name == software_user
    for index in range(2):
        name, path = f"{user_base}{index}", tmp_path / "instance" / f"slappart{index}"
        entry = pwd.getpwnam(name)
        assert (entry.pw_dir, entry.pw_shell) == (str(path), "/bin/sh")
        assert grp.getgrgid(entry.pw_gid).gr_name == name
        assert name in grp.getgrnam(software_user).gr_mem
        assert entry.pw_uid < 1000  # a system account
        status = path.stat()
        assert (status.st_uid, status.st_gid) == (entry.pw_uid, entry.pw_gid)
        assert mode(path) == 0o750
        assert check_partition(path, entry.pw_uid) == []
        assert check_partition(path, 0) != []
        resource = json.loads((path / ".slapos-resource").read_text())
        assert resource["user"]["name"] == name
        assert resource["user"]["additional_group_list"] == [software_user]
    # a second run: nothing to do, even with the accounts in place
    before = snapshot(tmp_path)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="slapgrid.node.format"):
        run_format(None, flags)
    assert snapshot(tmp_path) == before
    assert "format: nothing to change" in [r.getMessage() for r in caplog.records]
    first, second = registered(master)
    assert first == second
    # an account changed behind format's back is put back
    subprocess.run(["usermod", "-s", "/bin/bash", f"{user_base}1"], check=True)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="slapgrid.node.format"):
        run_format(None, flags)
    changes = [r.getMessage() for r in caplog.records if "modify user" in r.getMessage()]
    assert changes == [f"format: modify user {user_base}1: shell /bin/bash → /bin/sh"]
    assert pwd.getpwnam(f"{user_base}1").pw_shell == "/bin/sh"
