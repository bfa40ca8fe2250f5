"""What a software run decides and the commands it would start, without running anything."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from slapgrid.node import process
from slapgrid.node.buildout import (
    BuildoutError,
    bootstrap_command,
    parse_shebang,
    software_arguments,
)
from slapgrid.node.config import NodeConfig
from slapgrid.node.disk import DiskSpaceError, check_free_space, format_bytes
from slapgrid.node.identity import run_as
from slapgrid.node.planner import Kind, plan_software
from slapgrid.node.safety import UnsafeValueError, software_hash
from slapgrid.node.software.run import (
    buildout_cfg,
    observe_releases,
    plan_releases,
    select_releases,
)
from support.configs import node_config

A = "https://example.com/a/software.cfg"
B = "https://example.com/b/software.cfg"


def release(url: str, state: str | None = "available") -> SimpleNamespace:
    return SimpleNamespace(url=url, requested_state=state)


def test_filter_names_releases_by_url_or_hash() -> None:
    releases = [release(A), release(B), release(A, "destroyed")]
    assert [r.url for r in select_releases(releases)] == [A, B]  # each URL once, first wins
    assert [r.url for r in select_releases(releases, [B])] == [B]
    assert [r.url for r in select_releases(releases, [software_hash(A)])] == [A]
    assert select_releases(releases, ["https://example.com/other"]) == []
    assert select_releases(releases, [A + "/"]) == []  # no normalisation: another directory


def test_selected_releases_keep_their_requested_state() -> None:
    selected = select_releases([release(A, None), release(B, "destroyed")])
    assert [(r.url, r.state) for r in selected] == [(A, "available"), (B, "destroyed")]


@pytest.fixture
def config(tmp_path: Path) -> NodeConfig:
    return node_config(tmp_path)


def plan(config: NodeConfig, *releases: SimpleNamespace, force: bool = False) -> dict:
    selected = select_releases(releases)
    actions = plan_software(selected, observe_releases(config, selected), {}, 0.0, force=force)
    return {action.target: (action.kind, action.reason) for action in actions}


def test_decisions_follow_the_disk(config: NodeConfig) -> None:
    built = config.software_root / software_hash(A)
    built.mkdir()
    (built / ".completed").write_text("done")
    half_built = config.software_root / software_hash(B)
    half_built.mkdir()
    decisions = plan(config, release(A), release(B))
    assert decisions[A][0] == Kind.SKIP
    assert decisions[B] == (Kind.BUILD, "previous build did not finish")
    assert plan(config, release(A), force=True)[A] == (Kind.BUILD, "forced rebuild")


def test_destruction_is_refused_while_a_partition_links_to_the_software(
    config: NodeConfig,
) -> None:
    software = config.software_root / software_hash(A)
    software.mkdir()
    partition = config.instance_root / "slappart2"
    partition.mkdir()
    (partition / "software_release").symlink_to(software)
    kind, reason = plan(config, release(A, "destroyed"))[A]
    assert kind == Kind.ERROR and "slappart2" in reason

    (partition / "software_release").unlink()
    assert plan(config, release(A, "destroyed"))[A][0] == Kind.REMOVE_SOFTWARE
    software.rmdir()
    assert plan(config, release(A, "destroyed"))[A] == (
        Kind.REMOVE_SOFTWARE,
        "requested destroyed, already gone",
    )


def test_buildout_cfg_extends_the_url_and_lists_shared_parts() -> None:
    assert buildout_cfg(A, ["/srv/shared", "/opt/$x"], []) == (
        f"[buildout]\nextends = {A}\nshared-part-list =\n\t/srv/shared\n\t/opt/$$x\n"
    )
    assert buildout_cfg(A, [], []) == f"[buildout]\nextends = {A}\n"


@pytest.mark.parametrize("url", ["https://x/a.cfg\n[evil]", "https://x/$(rm -rf)", ""])
def test_buildout_cfg_refuses_urls_that_would_inject_configuration(url: str) -> None:
    with pytest.raises(UnsafeValueError):
        buildout_cfg(url, [], [])


def test_software_arguments_are_the_reference_ones(tmp_path: Path) -> None:
    assert software_arguments(tmp_path) == [
        f"buildout:extends-cache={tmp_path}/extends-cache",
        f"buildout:directory={tmp_path}",
        "-N",
        "-c",
        f"{tmp_path}/buildout.cfg",
    ]
    assert "-N" not in software_arguments(tmp_path, force=True)


def test_bootstrap_uses_the_agents_python_and_zc_buildout() -> None:
    command = bootstrap_command(["buildout:directory=/s"])
    assert command[:3] == [sys.executable, "-S", "-c"]
    assert command[-3:] == ["-U", "buildout:directory=/s", "bootstrap"]
    compile(command[3], "<bootstrap>", "exec")
    assert bootstrap_command([], "/opt/bin/buildout") == [
        sys.executable,
        "-S",
        "/opt/bin/buildout",
        "-U",
        "bootstrap",
    ]


@pytest.mark.parametrize(
    ("first_line", "expected"),
    [
        ("#!/usr/bin/python3\n", ["/usr/bin/python3"]),
        ("#! /opt/python -S  \n", ["/opt/python", "-S"]),
        ("#!/usr/bin/env python3 -I -S\n", ["/usr/bin/env", "python3 -I -S"]),  # kernel rule
    ],
)
def test_shebang_names_the_interpreter(tmp_path: Path, first_line: str, expected: list) -> None:
    script = tmp_path / "buildout"
    script.write_text(first_line + "import sys\n")
    assert parse_shebang(script) == expected


def test_a_script_without_shebang_is_an_error(tmp_path: Path) -> None:
    script = tmp_path / "buildout"
    script.write_text("import sys\n")
    with pytest.raises(BuildoutError, match="no #! line"):
        parse_shebang(script)
    with pytest.raises(BuildoutError, match="cannot read"):
        parse_shebang(tmp_path / "missing")


def test_children_get_a_scrubbed_environment() -> None:
    base = {"PATH": "/bin", "PYTHONPATH": "/x", "LANG": "fr_FR", "LC_ALL": "C", "LC_TIME": "C"}
    environment = process.clean_environment("/home/p", {"EXTRA": "1"}, base=base)
    assert environment == {
        "PATH": "/bin",
        "LC_ALL": "C",  # not in the reference's list
        "HOME": "/home/p",
        "PYTHONNOUSERSITE": "true",
        "EXTRA": "1",
    }


def test_tail_keeps_whole_last_lines_within_its_limit() -> None:
    tail = process.Tail(limit=20)
    for index in range(10):
        tail.add(f"line {index}")
    assert tail.text() == "line 8\nline 9"
    huge = process.Tail(limit=4)
    huge.add("a very long line")
    assert huge.text() == "a very long line"  # the last line is always kept


def test_own_directory_needs_no_identity_switch(tmp_path: Path) -> None:
    assert run_as(tmp_path).popen_options() == {}


def test_free_space_error_names_the_option(tmp_path: Path) -> None:
    check_free_space(tmp_path / "new" / "software", 0, "software_min_free_space")
    with pytest.raises(DiskSpaceError, match="option 'software_min_free_space'"):
        check_free_space(tmp_path / "new" / "software", 1 << 62, "software_min_free_space")


def test_sizes_read_like_df() -> None:
    assert [format_bytes(n) for n in (512, 1536, 5 << 30)] == ["512 B", "1.5 KiB", "5.0 GiB"]


def test_networkcache_arguments_come_before_n(tmp_path: Path) -> None:
    extra = ["buildout:networkcache-section=networkcache", "networkcache:upload-cache-url=u"]
    arguments = software_arguments(tmp_path, extra=extra)
    assert arguments[2:4] == extra and arguments[4] == "-N"


def test_a_planned_build_says_whether_the_binary_cache_is_tried_first(tmp_path: Path) -> None:
    """`slapgrid plan` (and a run's log) tell a build from the cache from one from source."""
    certificate = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"
    cache = {
        "download-binary-cache-url": "http://cache/shacache",
        "download-binary-dir-url": "http://cache/shadir",
        "signature-certificate-list": certificate,
    }
    computer = SimpleNamespace(software_releases=[release(A), release(B)])
    (tmp_path / "software" / software_hash(B)).mkdir(parents=True)  # a partial build

    def reasons(config: NodeConfig) -> dict[str, str]:
        return {action.target: action.reason for action in plan_releases(config, computer)}

    assert reasons(node_config(tmp_path, extra=cache)) == {
        A: "not built yet; binary cache first",
        B: "previous build did not finish; from source: directory already exists",
    }
    assert reasons(node_config(tmp_path))[A] == (
        "not built yet; from source: no binary cache configured"
    )
