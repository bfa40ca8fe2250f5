"""supervisord configuration rendering, checked by supervisor's own parser."""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

import pytest
from supervisor.datatypes import RestartUnconditionally
from supervisor.options import ServerOptions

from slapgrid.node.supervisor.conf import (
    Program,
    check_name,
    partition_programs,
    program_identity,
    render_partition_conf,
    render_supervisord_conf,
)
from slapgrid.node.supervisor.control import Supervisor
from slapgrid.node.supervisor.errors import SupervisorError

PYTHON = "/opt/agent/bin/python"


def parse(conf: Path) -> ServerOptions:
    options = ServerOptions()
    options.configfile = str(conf)
    options.process_config(do_usage=False)
    return options


def make_partition(root: Path, pid: str, runs=(), services=()) -> Path:
    partition = root / pid
    for folder, names in (("run", runs), ("service", services)):
        (partition / "etc" / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            script = partition / "etc" / folder / name
            script.write_text("#!/bin/sh\nexec sleep 100\n")
            script.chmod(0o755)
    return partition


@pytest.fixture
def supervisor(tmp_path: Path) -> Supervisor:
    sv = Supervisor(tmp_path / "ir", python=PYTHON)
    sv.ensure_config("https://master.example:8443/a%2Fb", "COMP-1", tmp_path / "certs")
    return sv


def test_node_conf_parses_with_socket_logs_include_and_watchdog(supervisor: Supervisor) -> None:
    root = supervisor.instance_root
    text = supervisor.paths.conf.read_text()
    assert f"file = {root}/sv.sock\nchmod = 0700" in text
    assert f"files = {root}/etc/supervisord.conf.d/*.conf" in text
    assert "supervisor.rpcinterface:make_main_rpcinterface" in text
    assert f"serverurl = unix://{root}/sv.sock" in text

    options = parse(supervisor.paths.conf)
    assert options.logfile == str(root / "var/log/supervisord.log")
    assert options.pidfile == str(root / "var/run/supervisord.pid")
    assert options.childlogdir == str(root / "var/log")
    [watchdog] = options.process_group_configs
    assert watchdog.name == "watchdog"
    assert sorted(event.__name__ for event in watchdog.pool_events) == [
        "ProcessStateExitedEvent",
        "ProcessStateFatalEvent",
    ]
    [listener] = watchdog.process_configs
    # the %-encoded URL survives supervisord's own %-expansion
    assert listener.command == (
        f"{PYTHON} -m slapgrid.node.supervisor.bang_listener "
        "--master-url https://master.example:8443/a%2Fb "
        f"--computer-id COMP-1 --instance-root {root} "
        f"--certificate-repository-path {root.parent / 'certs'}"
    )
    assert listener.autorestart is RestartUnconditionally
    assert listener.stderr_logfile == str(root / "var/log/watchdog.log")
    assert Path(listener.environment["PYTHONPATH"], "slapgrid").is_dir()


def test_node_conf_files_modes_and_rewrite_only_on_change(supervisor: Supervisor) -> None:
    root = supervisor.instance_root
    assert stat.S_IMODE(supervisor.paths.conf.stat().st_mode) == 0o600
    for directory in ("etc", "etc/supervisord.conf.d", "var/log", "var/run"):
        assert stat.S_IMODE((root / directory).stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "var").stat().st_mode) == 0o755

    cert_dir = root.parent / "certs"
    assert not supervisor.ensure_config("https://master.example:8443/a%2Fb", "COMP-1", cert_dir)
    supervisor.paths.conf.chmod(0o644)
    assert supervisor.ensure_config("https://master.example:8443/a%2Fb", "COMP-1", cert_dir)
    assert stat.S_IMODE(supervisor.paths.conf.stat().st_mode) == 0o600
    assert supervisor.ensure_config("http://other", "COMP-1")
    assert "--certificate-repository-path" not in supervisor.paths.conf.read_text()


def test_partition_conf_runs_once_services_restart(supervisor: Supervisor) -> None:
    partition = make_partition(
        supervisor.instance_root, "slappart0", runs=["b-run", "a-run"], services=["web"]
    )
    assert supervisor.write_partition("slappart0", partition, owner_uid=os.geteuid())
    conf = supervisor.partition_conf("slappart0")
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600

    groups = {group.name: group for group in parse(supervisor.paths.conf).process_group_configs}
    programs = {program.name: program for program in groups["slappart0"].process_configs}
    assert sorted(programs) == ["a-run", "b-run", "web-on-watch"]
    assert "programs = slappart0_a-run,slappart0_b-run,slappart0_web" in conf.read_text()

    service, run = programs["web-on-watch"], programs["a-run"]
    assert service.command == str(partition / "etc/service/web")
    assert run.command == str(partition / "etc/run/a-run")
    assert service.autorestart is RestartUnconditionally
    assert (service.startsecs, service.startretries) == (1, 3)
    assert run.autorestart is False
    assert (run.startsecs, run.startretries) == (0, 0)
    for program in programs.values():
        assert program.autostart is False
        assert program.directory == str(partition)
        assert program.stopasgroup and program.killasgroup
        assert program.redirect_stderr
        assert program.stdout_logfile_backups == 2
        assert program.stdout_logfile_maxbytes == 1024 * 1024
        assert program.uid is None  # the owner is the agent itself: no user=
    assert service.stdout_logfile == str(partition / ".slappart0_web.log")
    me = pwd.getpwuid(os.geteuid())
    digest = service.environment.pop("SLAPGRID_PROGRAM_DIGEST")
    assert service.environment == {"USER": me.pw_name, "LOGNAME": me.pw_name, "HOME": me.pw_dir}
    # a changed script is a changed program, which supervisord restarts on reload
    (partition / "etc/service/web").write_text("#!/bin/sh\nexec sleep 99\n")
    assert supervisor.write_partition("slappart0", partition, owner_uid=os.geteuid())
    groups = {group.name: group for group in parse(supervisor.paths.conf).process_group_configs}
    changed = {program.name: program for program in groups["slappart0"].process_configs}
    assert changed["web-on-watch"].environment["SLAPGRID_PROGRAM_DIGEST"] != digest
    assert changed["a-run"].environment == programs["a-run"].environment


def test_partition_conf_rewritten_only_on_change_and_removed_without_programs(
    supervisor: Supervisor,
) -> None:
    partition = make_partition(supervisor.instance_root, "slappart1", services=["web"])
    assert supervisor.write_partition("slappart1", partition)
    assert not supervisor.write_partition("slappart1", partition)
    make_partition(supervisor.instance_root, "slappart1", runs=["cron"])
    assert supervisor.write_partition("slappart1", partition)

    for folder in ("run", "service"):
        for script in (partition / "etc" / folder).iterdir():
            script.unlink()
    assert supervisor.write_partition("slappart1", partition)  # the file went away
    assert not supervisor.partition_conf("slappart1").exists()
    assert not supervisor.remove_partition("slappart1")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root switches users")
def test_partition_conf_switches_to_owner_when_root(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    user, environment = program_identity(nobody.pw_uid, tmp_path)
    assert user == "nobody"
    assert environment == {"USER": "nobody", "LOGNAME": "nobody", "HOME": nobody.pw_dir}
    assert program_identity(0, tmp_path)[0] is None
    with pytest.raises(SupervisorError, match="no passwd entry"):
        program_identity(54321, tmp_path)


def test_programs_of_a_partition_owned_by_another_user_switch_only_under_root(
    tmp_path: Path,
) -> None:
    nobody = pwd.getpwnam("nobody")
    assert program_identity(nobody.pw_uid, tmp_path, euid=0)[0] == "nobody"
    user, environment = program_identity(nobody.pw_uid, tmp_path, euid=1000)
    assert user is None  # rootless: the agent cannot switch, the environment still says who
    assert environment == {"USER": "nobody", "LOGNAME": "nobody", "HOME": nobody.pw_dir}
    assert program_identity(0, tmp_path, euid=0)[0] is None
    with pytest.raises(SupervisorError, match="no passwd entry"):
        program_identity(54321, tmp_path, euid=0)
    assert program_identity(54321, tmp_path, euid=54321) == (
        None,
        {"USER": "54321", "LOGNAME": "54321", "HOME": str(tmp_path)},
    )


def test_partition_programs_sorted_run_first_and_unusable_names_skipped(tmp_path: Path) -> None:
    partition = make_partition(
        tmp_path, "p", runs=["z", "a", "bad name", "x:y"], services=["a", "s", "50%"]
    )
    assert [(p.name, p.command, p.service) for p in partition_programs(partition)] == [
        ("a", partition / "etc/run/a", False),
        ("z", partition / "etc/run/z", False),
        ("s", partition / "etc/service/s", True),
    ]
    assert partition_programs(tmp_path / "missing") == []


def test_rendering_refuses_what_supervisord_would_misread(tmp_path: Path) -> None:
    program = [Program("web", tmp_path / "web", service=True)]
    env = {"HOME": "/home/x"}
    with pytest.raises(SupervisorError, match="'%'"):
        render_partition_conf("p", tmp_path / "50%", program, user=None, environment=env)
    with pytest.raises(SupervisorError, match="cannot be used as a supervisord name"):
        render_partition_conf("p:1", tmp_path, program, user=None, environment=env)
    with pytest.raises(SupervisorError, match="configuration"):
        render_partition_conf("p", tmp_path / "a ;b", program, user=None, environment=env)
    with pytest.raises(SupervisorError, match="quoted"):
        render_partition_conf("p", tmp_path, program, user=None, environment={"HOME": 'a"b'})
    with pytest.raises(SupervisorError, match="configuration"):
        render_supervisord_conf(tmp_path, python=PYTHON, master_url="http://x\n", computer_id="C")


def test_command_with_spaces_and_percent_is_quoted(tmp_path: Path) -> None:
    program = [Program("web", tmp_path / "my dir/web", service=False)]
    text = render_partition_conf("p", tmp_path, program, user=None, environment={"HOME": "/h%"})
    assert f"command = '{tmp_path}/my dir/web'" in text
    assert 'environment = HOME="/h%%"' in text


def test_a_trailing_newline_is_not_a_name(tmp_path: Path) -> None:
    with pytest.raises(SupervisorError, match="cannot be used as a supervisord name"):
        check_name("slappart0\n", "partition id")
    partition = make_partition(tmp_path, "p", services=["web", "web\n"])
    assert [p.name for p in partition_programs(partition)] == ["web"]
