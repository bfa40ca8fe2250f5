"""The reference's flags on slapgrid's commands: each one mapped, or explained in one line.

The machinery behind each command is replaced by a recorder: these tests check what the
command line hands it, and what it logs, not the runs themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from slapgrid.cli import node_cmds, reference_flags
from slapgrid.cli.main import cli
from slapgrid.cli.options import NodeContext, drop_lone_equals


@pytest.fixture
def root_logging() -> Iterator[logging.Logger]:
    """The command line configures the root logger: give pytest its handlers back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:], root.level = handlers, level


class Recorder:
    """What the commands handed to the machinery: configuration flags and run arguments."""

    def __init__(self) -> None:
        self.flags: dict[str, Any] = {}
        self.calls: dict[str, dict[str, Any]] = {}

    def config(self, context: NodeContext, flags: dict[str, Any] | None = None, **_: Any) -> Any:
        self.flags = context.merged(flags)
        return SimpleNamespace(instance_root=Path("/nonexistent"))

    def record(self, name: str, status: int = 0) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = {"args": args, **kwargs}
            return SimpleNamespace(status=status)

        return call


class _Client:
    def __enter__(self) -> _Client:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch, root_logging: logging.Logger) -> Recorder:
    from slapgrid.cli import node_agent
    from slapgrid.node.format import run as format_run
    from slapgrid.node.instance import run as instance_run
    from slapgrid.node.report import run as report_run
    from slapgrid.node.software import run as software_run
    from slapgrid.slap.client import SlapClient

    recorder = Recorder()
    monkeypatch.setattr(
        NodeContext, "config", lambda self, flags=None, **_: recorder.config(self, flags)
    )
    monkeypatch.setattr(SlapClient, "from_config", staticmethod(lambda config: _Client()))
    monkeypatch.setattr(software_run, "run_software", recorder.record("software"))
    monkeypatch.setattr(instance_run, "run_instance", recorder.record("instance"))
    monkeypatch.setattr(report_run, "run_report", recorder.record("report"))
    monkeypatch.setattr(format_run, "run_format", lambda *a, **k: _format(recorder, *a, **k))
    monkeypatch.setattr(node_cmds, "interruptible", lambda run: run(None))

    def serve(load: Any, connect: Any, **kwargs: Any) -> int:
        load()
        recorder.calls["serve"] = kwargs
        return 0

    monkeypatch.setattr(node_agent, "serve", serve)
    return recorder


def _format(recorder: Recorder, path: Path | None, overrides: Any, **kwargs: Any) -> int:
    recorder.calls["format"] = {"overrides": dict(overrides), **kwargs}
    return 0


def invoke(tmp_path: Path, *argv: str) -> tuple[int, list[str]]:
    """Run `slapgrid ARGV`; its exit code and the lines it logged."""
    log = tmp_path / "slapgrid.log"
    log.unlink(missing_ok=True)
    result = CliRunner().invoke(cli, ["--log-file", str(log), *argv])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    lines = log.read_text().splitlines() if log.exists() else []
    return result.exit_code, lines


@pytest.mark.parametrize(
    ("argv", "option", "value"),
    [
        (["instance", "--promise-timeout", "7"], "promise_timeout", "7"),
        (["instance", "--promise_timeout", "7"], "promise_timeout", "7"),
        (["instance", "--maximum-periodicity", "60"], "maximum_periodicity", "60"),
        (["instance", "--maximum_periodicity", "60"], "maximum_periodicity", "60"),
        (["instance", "--partition-timeout", "9"], "partition_timeout", "9"),
        (["instance", "--partition_timeout", "9"], "partition_timeout", "9"),
        (["software", "--buildout", "/opt/bin/buildout"], "buildout", "/opt/bin/buildout"),
        (["report", "--promise-timeout", "7"], "promise_timeout", "7"),
        (["node", "--maximal-delay", "30"], "maximal_delay", "30"),
        (["node", "--maximal_delay", "30"], "maximal_delay", "30"),
        (["instance", "--buildout_debug"], "buildout_debug", True),
        (["software", "--buildout_debug"], "buildout_debug", True),
        (["node", "--buildout_debug"], "buildout_debug", True),
        (["--buildout_debug", "instance"], "buildout_debug", True),
        (["--promise-timeout", "7", "instance"], "promise_timeout", "7"),
        (["--maximal_delay", "5"], "maximal_delay", "5"),
        (["--partition_timeout", "5"], "partition_timeout", "5"),
        (["software", "--signature-private-key-file", "/k"], "signature_private_key_file", "/k"),
        (["software", "--signature_private_key_file", "/k"], "signature_private_key_file", "/k"),
    ],
)
def test_options_reach_the_configuration(
    tmp_path: Path,
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    option: str,
    value: object,
) -> None:
    monkeypatch.setattr(node_cmds, "run_all", lambda context: recorder.config(context) and 0)
    code, _ = invoke(tmp_path, *argv)
    assert code == 0
    assert recorder.flags[option] == value


def test_all_is_force_on_instance_and_software(tmp_path: Path, recorder: Recorder) -> None:
    assert invoke(tmp_path, "instance", "--all")[0] == 0
    assert recorder.calls["instance"]["force"] is True
    assert invoke(tmp_path, "software", "--all")[0] == 0
    assert recorder.calls["software"]["force"] is True


@pytest.mark.parametrize(
    ("argv", "overrides", "dry_run"),
    [
        (["--alter_user", "False"], {"alter_user": "False"}, False),
        (["--alter_network", "True"], {"alter_network": "True"}, False),
        (["--computer_json", "/tmp/c.json"], {"computer_json": "/tmp/c.json"}, False),
        (["-x", "/tmp/c.xml"], {"computer_xml": "/tmp/c.xml"}, False),  # read to migrate
        (["--computer_xml", "/tmp/c.xml"], {"computer_xml": "/tmp/c.xml"}, False),
        (["-n"], {}, True),
        (["--dry_run"], {}, True),
        (["-i", "/def.cfg"], {"input_definition_file": "/def.cfg"}, False),
        (["--output_definition_file", "/o.cfg"], {"output_definition_file": "/o.cfg"}, False),
    ],
)
def test_format_spellings(
    tmp_path: Path, recorder: Recorder, argv: list[str], overrides: dict[str, Any], dry_run: bool
) -> None:
    assert invoke(tmp_path, "format", *argv)[0] == 0
    call = recorder.calls["format"]
    assert overrides.items() <= call["overrides"].items()
    assert call["dry_run"] is dry_run
    assert not any(key.startswith("reference_") for key in call["overrides"])


@pytest.mark.parametrize(("word", "value"), [("True", True), ("False", False), ("maybe", None)])
def test_alter_user_takes_the_references_words(
    tmp_path: Path, word: str, value: bool | None
) -> None:
    from slapgrid.errors import ConfigError
    from slapgrid.node.format.config import load_format_config

    flags = {
        "master_url": "http://127.0.0.1:9/",
        "computer_id": "COMP-1",
        "instance_root": str(tmp_path),
        "software_root": str(tmp_path),
        "partition_amount": 1,
        "alter_user": word,
    }
    if value is None:
        with pytest.raises(ConfigError, match="option 'alter_user' must be true or false"):
            load_format_config(None, flags)
    else:
        assert load_format_config(None, flags).alter_user is value


@pytest.mark.parametrize(
    ("argv", "level", "words"),
    [
        (["software", "--pidfile", "/p"], "WARNING", "--pidfile: no pid file is written"),
        (["instance", "--pidfile", "/p"], "WARNING", "slapgrid instance holds a lock"),
        (["report", "--pidfile", "/p"], "WARNING", "slapgrid report holds a lock"),
        (["node", "--pidfile", "/p"], "WARNING", "slapgrid node holds a lock"),
        (["--pidfile", "/p"], "WARNING", "slapgrid holds a lock"),
        (["instance", "--supervisord-socket", "/s"], "WARNING", "instance_root/sv.sock"),
        (["software", "--supervisord_socket", "/s"], "WARNING", "instance_root/sv.sock"),
        (["report", "--supervisord-configuration-path", "/c"], "WARNING", "supervisord.conf"),
        (["software", "--now"], "INFO", "slapgrid software always starts at once"),
        (["instance", "--now"], "INFO", "slapgrid instance always starts at once"),
        (["report", "--now"], "INFO", "slapgrid report always starts at once"),
        (["--now"], "INFO", "slapgrid always starts at once"),
        (["instance", "--maximal-delay", "9"], "INFO", "slapgrid instance starts at once"),
        (["software", "--maximal_delay", "9"], "INFO", "slapgrid software starts at once"),
        (["software", "--garbage-collect"], "WARNING", "--garbage-collect: not done"),
        (["software", "--garbage_collect"], "WARNING", "--garbage-collect: not done"),
        (["instance", "--force-stop"], "WARNING", "--force-stop: not done"),
        (["instance", "--force_stop"], "WARNING", "supervisorctl stop all"),
        (["format", "--now"], "INFO", "slapgrid format always starts at once"),
        (["format", "-c", "x"], "INFO", "--console: ignored"),
        (["format", "--console", "x"], "INFO", "--console: ignored"),
    ],
)
def test_explained_flags_log_one_line(
    tmp_path: Path,
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    level: str,
    words: str,
) -> None:
    monkeypatch.setattr(node_cmds, "run_all", lambda context: 0)
    code, lines = invoke(tmp_path, *argv)
    assert code == 0
    assert len(lines) == 1, lines
    assert f" {level} " in lines[0] and words in lines[0]


@pytest.mark.parametrize("argv", [["node", "--maximal-delay", "9"], ["--now", "--daemon"]])
def test_the_agent_honours_the_delay_flags_silently(
    tmp_path: Path, recorder: Recorder, argv: list[str]
) -> None:
    code, lines = invoke(tmp_path, *argv)
    assert code == 0 and lines == []


@pytest.mark.parametrize("argv", [["--now", "--daemon"], ["--now", "node"], ["node", "--now"]])
def test_now_skips_the_agents_delay(tmp_path: Path, recorder: Recorder, argv: list[str]) -> None:
    assert invoke(tmp_path, *argv)[0] == 0
    assert recorder.calls["serve"]["now"] is True


def test_reference_flags_are_hidden_from_help() -> None:
    help_text = CliRunner().invoke(cli, ["instance", "--help"]).output
    assert "--promise-timeout" in help_text and "--maximum-periodicity" in help_text
    for hidden in ("--pidfile", "--force-stop", "--supervisord-socket", "--all"):
        assert hidden not in help_text
    assert "--promise-timeout" not in CliRunner().invoke(cli, ["report", "--help"]).output


def test_flag_names_are_unique() -> None:
    flags = [*reference_flags.SOFTWARE, *reference_flags.INSTANCE, *reference_flags.FORMAT]
    by_name: dict[str, reference_flags.ReferenceFlag] = {}
    for flag in flags:
        assert by_name.setdefault(flag.name, flag) is flag


# --- the seed's `--configuration-file = path` ------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--configuration-file", "=", "a.cfg"], ["--configuration-file", "a.cfg"]),
        (["-v", "--cfg", "=", "a.cfg", "instance"], ["-v", "--cfg", "a.cfg", "instance"]),
        (["instance", "--only", "=", "slappart0"], ["instance", "--only", "slappart0"]),
        (["--cfg", "="], ["--cfg", "="]),  # no value follows: left to click
        (["=", "a.cfg"], ["=", "a.cfg"]),  # not after an option
        (["--cfg", "a.cfg", "=", "b"], ["--cfg", "a.cfg", "=", "b"]),  # after a value
        (["--cfg=a.cfg"], ["--cfg=a.cfg"]),
        (["supervisorctl", "x", "-f", "=", "y"], ["supervisorctl", "x", "-f", "=", "y"]),
        (["--", "--cfg", "=", "y"], ["--", "--cfg", "=", "y"]),
    ],
)
def test_a_lone_equals_after_an_option_is_dropped(argv: list[str], expected: list[str]) -> None:
    assert drop_lone_equals(argv) == expected


def test_the_seeds_example_reads_the_file(tmp_path: Path, recorder: Recorder) -> None:
    code, _ = invoke(tmp_path, "--configuration-file", "=", "/path/to/slapos.cfg", "instance")
    assert code == 0
    assert recorder.flags["configuration_file"] == "/path/to/slapos.cfg"


def test_the_log_file_takes_the_reference_spellings(tmp_path: Path, recorder: Recorder) -> None:
    for spelling in ("--logfile", "--log_file"):
        log = tmp_path / f"{spelling.strip('-')}.log"
        result = CliRunner().invoke(cli, [spelling, str(log), "instance", "--now"])
        assert result.exit_code == 0, result.output
        assert "always starts at once" in log.read_text()
