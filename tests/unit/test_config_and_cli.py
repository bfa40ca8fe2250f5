"""Configuration merging and the command line's promise: one clear line, the right exit."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from slapgrid.cli.logs import JsonFormatter
from slapgrid.cli.main import cli, main
from slapgrid.errors import ConfigError
from slapgrid.node.config import find_config_file, load_node_config, parse_size
from slapgrid.slap.client import SlapClient
from slapgrid.user.client_config import DEFAULT_MASTER_URL, find_client_config, load_client_config


def write_cfg(tmp_path: Path, body: str) -> Path:
    (tmp_path / "instance").mkdir(exist_ok=True)
    (tmp_path / "software").mkdir(exist_ok=True)
    path = tmp_path / "slapos.cfg"
    path.write_text(body.format(root=tmp_path))
    return path


FULL = """
[slapos]
master_url = http://127.0.0.1:5000/
computer_id = COMP-1
instance_root = {root}/instance
software_root = {root}/software
maximum_periodicity = 600
software_min_free_space = 2G
partition-timeout = 30
shared_part_list =
  /opt/a
  /opt/b
[networkcache]
download-cache-url = http://cache/
"""


def test_file_is_read_and_typed(tmp_path: Path) -> None:
    config = load_node_config(write_cfg(tmp_path, FULL))
    assert config.maximum_periodicity == 600  # an int, unlike the reference
    assert config.software_min_free_space == 2 << 30
    assert config.partition_timeout == 30.0
    assert config.shared_part_list == ("/opt/a", "/opt/b")
    assert config.extra["download-cache-url"] == "http://cache/"


def test_promise_failures_before_redeploy(tmp_path: Path) -> None:
    assert load_node_config(write_cfg(tmp_path, FULL)).promise_failures_before_redeploy == 3
    text = FULL.replace("[networkcache]", "promise_failures_before_redeploy = 0\n[networkcache]")
    assert load_node_config(write_cfg(tmp_path, text)).promise_failures_before_redeploy == 0


def test_flags_override_the_file(tmp_path: Path) -> None:
    config = load_node_config(write_cfg(tmp_path, FULL), {"computer_id": "COMP-2", "jobs": None})
    assert config.computer_id == "COMP-2"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("root_check = maybe", "option 'root_check' must be true or false"),
        ("maximum_periodicity = soon", "option 'maximum_periodicity' must be a whole number"),
        ("instance_min_free_space = lots", "option 'instance_min_free_space' must be a size"),
        ("key_file = /nonexistent.key\ncert_file = /nonexistent.crt", "option 'key_file'"),
        ("key_file = /nonexistent.key", "must be given together"),
        ("certificate_repository_path = /nonexistent", "certificate_repository_path"),
        ("promise_failures_before_redeploy = -1", "'promise_failures_before_redeploy' must be 0"),
        ("promise_failures_before_redeploy = 3x", "'promise_failures_before_redeploy' must be a"),
    ],
)
def test_bad_values_name_the_option(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_node_config(write_cfg(tmp_path, FULL + line + "\n"))


def test_missing_options_are_listed_with_their_flags(tmp_path: Path) -> None:
    path = write_cfg(tmp_path, "[slapos]\ncomputer_id = C\n")
    with pytest.raises(ConfigError) as caught:
        load_node_config(path)
    assert str(caught.value) == (
        f"missing mandatory option(s) in [slapos] of {path}: master_url, instance_root, "
        "software_root (--master-url, --instance-root, --software-root)"
    )


def test_sizes() -> None:
    assert [parse_size(v, "x") for v in ("1000M", "2g", "512k", "10", "1.5G")] == [
        1000 << 20,
        2 << 30,
        512 << 10,
        10,
        int(1.5 * (1 << 30)),
    ]


def test_config_file_discovery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SLAPOS_CONFIGURATION", raising=False)
    home_cfg = tmp_path / ".slapos" / "slapos.cfg"
    home_cfg.parent.mkdir()
    home_cfg.write_text("[slapos]\n")
    if not Path("/etc/opt/slapos/slapos.cfg").exists():
        assert find_config_file(None) == home_cfg
    monkeypatch.setenv("SLAPOS_CONFIGURATION", "/from/env.cfg")
    assert find_config_file(None) == Path("/from/env.cfg")
    assert find_config_file("/explicit.cfg") == Path("/explicit.cfg")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    return exited.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--configuration-file", "/nonexistent.cfg", "software"], "does not exist"),
        (["--configuration-file=/nonexistent.cfg"], "does not exist"),
        (["--no-such-flag"], "No such option"),
        (["software", "--instance-root", "/nonexistent"], "missing mandatory option"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    fragment: str,
) -> None:
    monkeypatch.delenv("SLAPOS_CONFIGURATION", raising=False)
    monkeypatch.setenv("HOME", "/nonexistent")
    code, err = run(capsys, *argv)
    assert code == 2
    assert fragment in err
    assert "Traceback" not in err


def test_unparsable_file_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.cfg"
    bad.write_text("no section header\n")
    code, err = run(capsys, "--cfg", str(bad), "instance")
    assert code == 2
    assert err.strip().count("\n") == 0 and "cannot parse configuration file" in err


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert "slapgrid, version" in capsys.readouterr().out
    for command in ("software", "instance", "report", "format", "status"):
        with pytest.raises(SystemExit) as exited:
            main([command, "--help"])
        assert exited.value.code == 0
        assert "--configuration-file" in capsys.readouterr().out


@pytest.fixture
def root_logging() -> Iterator[logging.Logger]:
    """The command line configures the root logger: give pytest its handlers back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    httpx_level = logging.getLogger("httpx").level
    yield root
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:], root.level = handlers, level
    logging.getLogger("httpx").setLevel(httpx_level)


@pytest.mark.parametrize(
    "argv",
    [
        ["-v", "--log-format", "json", "--log-file", "{log}", "status"],
        ["status", "-v", "--log-format", "json", "--log-file", "{log}"],
        ["--log-format", "text", "status", "--log-file", "{log}", "--log-format", "json", "-v"],
    ],
)
def test_global_options_before_or_after_the_subcommand(
    tmp_path: Path, root_logging: logging.Logger, argv: list[str]
) -> None:
    log = tmp_path / "agent.log"
    args = [arg.format(log=log) for arg in argv] + ["--instance-root", "/nonexistent"]
    result = CliRunner().invoke(
        cli, args, env={"SLAPOS_CONFIGURATION": None, "HOME": "/nonexistent"}
    )
    assert isinstance(result.exception, ConfigError)
    assert "missing mandatory option" in str(result.exception)
    assert root_logging.level == logging.DEBUG
    assert log.is_file()
    assert [type(h.formatter) for h in root_logging.handlers] == [JsonFormatter] * 2


def test_verbose_adds_up_across_the_subcommand(root_logging: logging.Logger) -> None:
    CliRunner().invoke(cli, ["-v", "status", "--instance-root", "/nonexistent"])
    assert logging.getLogger("httpx").level == logging.WARNING
    CliRunner().invoke(cli, ["-v", "status", "-v", "--instance-root", "/nonexistent"])
    assert logging.getLogger("httpx").level == logging.DEBUG


def test_a_log_file_after_the_subcommand_replaces_the_groups(
    tmp_path: Path, root_logging: logging.Logger
) -> None:
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    argv = ["--log-file", str(first), "status", "--log-file", str(second)]
    CliRunner().invoke(cli, [*argv, "--instance-root", "/nonexistent"])
    files = [h for h in root_logging.handlers if isinstance(h, logging.FileHandler)]
    assert [h.baseFilename for h in files] == [str(second)]


def test_user_and_master_commands_take_global_options_too(root_logging: logging.Logger) -> None:
    for argv in (["show", "-v", "--help"], ["master", "-v", "show", "-v", "--help"]):
        result = CliRunner().invoke(cli, argv)
        assert result.exit_code == 0, result.output
        assert "--log-format" in result.output


def _help(command: str) -> str:
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0, result.output
    return result.output


def test_each_subcommand_lists_only_its_options() -> None:
    assert "--partition-amount" in _help("format")
    assert "--jobs" not in _help("format")
    software = _help("software")
    assert "--jobs" in software and "--buildout-debug" in software
    assert "--partition-amount" not in software
    assert "--certificate-repository-path" not in software
    status = _help("status")
    for absent in ("--jobs", "--key-file", "--buildout-debug", "--certificate-repository-path"):
        assert absent not in status
    assert "--key-file" in _help("plan") and "--jobs" not in _help("plan")
    assert "--certificate-repository-path" in _help("report")
    assert "--dry-run" not in _help("node")


def test_an_option_that_does_not_apply_is_refused(
    capsys: pytest.CaptureFixture[str], root_logging: logging.Logger
) -> None:
    code, err = run(capsys, "status", "--jobs", "2")
    assert code == 2
    assert "No such option '--jobs'" in err


def test_client_config_discovery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SLAPOS_CLIENT_CONFIGURATION", raising=False)
    monkeypatch.setenv("SLAPOS_CONFIGURATION", "/node.cfg")
    assert find_client_config(None) == Path("/node.cfg")  # a node's file serves its users
    client_cfg = tmp_path / ".slapos" / "slapos-client.cfg"
    client_cfg.parent.mkdir()
    client_cfg.write_text("[slapos]\n")
    assert find_client_config(None) == client_cfg
    monkeypatch.setenv("SLAPOS_CLIENT_CONFIGURATION", "/from/env.cfg")
    assert find_client_config(None) == Path("/from/env.cfg")
    assert find_client_config("/explicit.cfg") == Path("/explicit.cfg")


def test_client_config_reads_master_console_certificate_and_ca(tmp_path: Path) -> None:
    path = tmp_path / "slapos-client.cfg"
    path.write_text(
        "[slapos]\nmaster_url = https://master/\n"
        "[slapconsole]\nkey_file = /u/key.pem\ncert_file = /u/cert.pem\n"
    )
    config = load_client_config(str(path), None, "user")
    assert (config.master_url, config.key_file, config.cert_file) == (
        "https://master/",
        Path("/u/key.pem"),
        Path("/u/cert.pem"),
    )
    assert config.master_ca_file is None
    assert load_client_config(str(path), "http://flag/", "user").master_url == "http://flag/"
    path.write_text(  # the master's CA: [slapconsole]'s, else the node's [slapos] one
        "[slapos]\nmaster_ca_file = /node/ca.pem\n[slapconsole]\nmaster_ca_file = ~/ca.pem\n"
    )
    assert load_client_config(str(path), None, "user").master_ca_file == Path.home() / "ca.pem"
    path.write_text("[slapos]\nmaster_ca_file = /node/ca.pem\n[slapconsole]\n")
    assert load_client_config(str(path), None, "user").master_ca_file == Path("/node/ca.pem")
    empty = tmp_path / "empty.cfg"
    empty.write_text("")
    assert load_client_config(str(empty), None, "user").master_url == DEFAULT_MASTER_URL


def test_client_from_a_configuration(tmp_path: Path) -> None:
    node = load_node_config(write_cfg(tmp_path, FULL))
    with SlapClient.from_config(node) as client:
        assert (client.computer_id, client.transport.base_url) == ("COMP-1", node.master_url)
