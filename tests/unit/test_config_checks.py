"""Nothing in slapos.cfg is silently ignored, and nonsense values are refused at load."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from slapgrid.errors import ConfigError
from slapgrid.node import config_checks
from slapgrid.node.config import load_node_config, read_config_file
from support.configs import write_slapos_cfg


def review(tmp_path: Path, extra: str = "") -> list[str]:
    path = write_slapos_cfg(tmp_path, extra)
    return config_checks.review(read_config_file(path), path)


@pytest.fixture(autouse=True)
def fresh_warnings() -> Iterator[None]:
    config_checks.forget_warnings()
    yield
    config_checks.forget_warnings()


def test_a_clean_file_says_nothing(tmp_path: Path) -> None:
    used = "maximum_periodicity = 600\npartition-timeout = 30\npartition_amount = 3\nroot_check = 0"
    assert review(tmp_path, used) == []


def test_defaults_are_not_the_sections_own(tmp_path: Path) -> None:
    assert review(tmp_path, "[DEFAULT]\nbase = /srv\n") == []


@pytest.mark.parametrize(
    ("extra", "line"),
    [
        ("manager_list = cpuset", "[slapos] manager_list in {path}: ignored: slapgrid has no"),
        ("[manager:devperm]\nallowed-disk-for-vm = /dev/sda\n", "[manager:devperm] in {path}:"),
        (
            "manager_list = devperm, prerm\n[manager:devperm]\na = b\n[manager:prerm]\n",
            "[slapos] manager_list, [manager:devperm], [manager:prerm] in {path}: ignored",
        ),
        ("[firewall]\nfirewall_cmd = firewall-cmd\n", "[firewall] in {path}: ignored: slapgrid"),
        (
            "[networkcache]\ndownload-cache-url = http://c/\n",
            "[networkcache] download-cache-url in {path}: not read",
        ),
        ("[collect]\nenable = True\n", "[collect] in {path}: ignored: slapgrid keeps no usage"),
    ],
)
def test_features_slapgrid_lacks_get_one_line(tmp_path: Path, extra: str, line: str) -> None:
    lines = review(tmp_path, extra)
    assert len(lines) == 1, lines
    assert lines[0].startswith(line.format(path=tmp_path / "slapos.cfg"))


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [
        ("maximum_periodicty", "maximum_periodicity"),
        ("promise_timout", "promise_timeout"),
        ("instance_rot", "instance_root"),
        ("pidfile_instanse", "pidfile_instance"),  # a reference option is suggested too
    ],
)
def test_a_typo_gets_did_you_mean(tmp_path: Path, key: str, suggestion: str) -> None:
    [line] = review(tmp_path, f"{key} = 1")
    assert line == (
        f"[slapos] {key} in {tmp_path / 'slapos.cfg'}: unknown option, ignored; "
        f"did you mean {suggestion}?"
    )


def test_an_unknown_option_with_no_close_name(tmp_path: Path) -> None:
    [line] = review(tmp_path, "zzz = 1")
    assert line.endswith("zzz in " + str(tmp_path / "slapos.cfg") + ": unknown option, ignored")


@pytest.mark.parametrize(
    "key", sorted({key for keys in config_checks.REFERENCE_ONLY.values() for key in keys})
)
def test_reference_options_are_not_used_not_unknown(tmp_path: Path, key: str) -> None:
    [line] = review(tmp_path, f"{key} = 1")
    assert f"[slapos] {key} in " in line
    assert ": not used by slapgrid: " in line


def test_reference_options_are_grouped_by_reason(tmp_path: Path) -> None:
    lines = review(tmp_path, "pidfile_software = /a\npidfile_instance = /b\ncollect_cache = 3")
    assert len(lines) == 2
    assert lines[0].startswith("[slapos] pidfile_software, pidfile_instance in ")
    assert "never pid files" in lines[0]


def test_warnings_are_logged_once_per_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_slapos_cfg(tmp_path, "maximum_periodicty = 5\n[networkcache]\nx = y\n")
    with caplog.at_level(logging.WARNING, logger="slapgrid.config"):
        for _ in range(3):  # the agent's reloads read the file again
            load_node_config(path)
    assert [record.levelname for record in caplog.records] == ["WARNING", "WARNING"]
    assert "did you mean maximum_periodicity?" in caplog.records[1].getMessage()


def test_a_warning_is_logged_even_when_the_file_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "slapos.cfg"
    path.write_text("[slapos]\nmaster_ur = http://x/\n")
    with caplog.at_level(logging.WARNING), pytest.raises(ConfigError, match="master_url"):
        load_node_config(path)
    assert "did you mean master_url?" in caplog.text


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("maximum_periodicity = -5", "'maximum_periodicity' must be a positive whole number"),
        ("maximum_periodicity = 0", "'maximum_periodicity' must be a positive whole number"),
        ("maximum_periodicity = daily", "'maximum_periodicity' must be a whole number"),
        ("promise_timeout = 0", "'promise_timeout' must be a positive number of seconds"),
        ("promise_timeout = -3", "'promise_timeout' must be a positive number of seconds"),
        ("promise_timeout = twenty", "'promise_timeout' must be a number"),
        ("promise_timeout = inf", "'promise_timeout' must be a positive number of seconds"),
        ("partition_timeout = 0", "'partition_timeout' must be a positive number"),
        ("partition-timeout = -1", "'partition_timeout' must be a positive number"),
        ("maximal_delay = -1", "'maximal_delay' must be 0 or more"),
        ("maximal_delay = soon", "'maximal_delay' must be a whole number"),
        ("jobs = -2", "'jobs' must be 0 or more"),
        ("instance_interval = 0", "'instance_interval' must be a positive number"),
        ("report_interval = -60", "'report_interval' must be a positive number"),
        ("poll_interval = 0", "'poll_interval' must be a positive number"),
        ("software_interval = -1", "'software_interval' must be 0 or a positive number"),
        ("metrics_port = 70000", "'metrics_port' must be a TCP port"),
        ("software_min_free_space = -1G", "'software_min_free_space' must be a size"),
    ],
)
def test_nonsense_is_refused_naming_option_and_file(tmp_path: Path, line: str, words: str) -> None:
    path = write_slapos_cfg(tmp_path, line)
    with pytest.raises(ConfigError) as caught:
        load_node_config(path)
    message = str(caught.value)
    assert words in message
    assert message.endswith(f"([slapos] of {path})")
    assert "\n" not in message


def test_a_flag_is_named_instead_of_the_file(tmp_path: Path) -> None:
    path = write_slapos_cfg(tmp_path, "promise_timeout = 5")
    with pytest.raises(ConfigError, match=r"not '0' \(--promise-timeout\)$"):
        load_node_config(path, {"promise_timeout": "0"})
    assert load_node_config(path, {"promise_timeout": "7"}).promise_timeout == 7.0


def test_zero_software_interval_is_allowed(tmp_path: Path) -> None:
    assert (
        load_node_config(write_slapos_cfg(tmp_path, "software_interval = 0")).software_interval == 0
    )


def test_the_agent_does_not_repeat_them_on_reload(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from slapgrid.node.daemon.loop import Daemon

    path = write_slapos_cfg(tmp_path, "pidfile = /run/x.pid\n[firewall]\n")
    with caplog.at_level(logging.INFO):
        daemon = Daemon(lambda: load_node_config(path), lambda config: None)  # type: ignore[arg-type,return-value]
        daemon._reload()  # SIGHUP, twice
        daemon._reload()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "[firewall]" in warnings[0] and "pidfile" in warnings[1]
    assert caplog.text.count("configuration reloaded") == 2


def test_every_option_of_the_agent_has_a_parser() -> None:
    """A NodeConfig field without a parser would never be read from the file."""
    import dataclasses

    from slapgrid.node.config import _PARSERS, REQUIRED, NodeConfig

    fields = {field.name for field in dataclasses.fields(NodeConfig)}
    assert set(_PARSERS) == fields - set(REQUIRED) - {"source", "extra"}
