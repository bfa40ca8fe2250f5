"""Configuration merging and the command line's promise: one clear line, the right exit."""

from __future__ import annotations

from pathlib import Path

import pytest

from slapgrid.cli.main import main
from slapgrid.errors import ConfigError
from slapgrid.node.config import find_config_file, load_node_config, parse_size


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
