"""Which Python and which eggs run a release's slapos.core plugins."""

from __future__ import annotations

from pathlib import Path

import pytest

from slapgrid.node.promises.generic import plugin_sys_path, software_python


def release(tmp_path: Path, script: str) -> Path:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "buildout").write_text(script)
    return tmp_path


@pytest.mark.parametrize(
    ("script", "python"),
    [
        ("#!/opt/slapos/bin/python3 -s\nimport sys\n", "/opt/slapos/bin/python3"),
        # buildout's wrapper for interpreter paths too long for a shebang
        (
            '#!/bin/sh\n"exec" "/very/long/path/bin/python" "$0" "$@"\n',
            "/very/long/path/bin/python",
        ),
        ("#!/bin/sh\necho not a wrapper\n", None),
        ("import sys\n", None),
        ('#!/bin/sh\n"exec" "unclosed\n', None),
    ],
)
def test_software_python_reads_the_buildout_script(
    tmp_path: Path, script: str, python: str | None
) -> None:
    assert software_python(release(tmp_path, script)) == python


def test_software_python_without_a_release(tmp_path: Path) -> None:
    assert software_python(None) is None
    assert software_python(tmp_path / "missing") is None


@pytest.mark.parametrize(
    ("source", "entries"),
    [
        ("import sys\nsys.path[0:0] = [\n  '/eggs/a',\n  '/eggs/b',\n]\n", ["/eggs/a", "/eggs/b"]),
        ("import sys\nsys.path[:0] = ['/eggs/a']\n", ["/eggs/a"]),
        ("import sys\nsys.path[0:0] = EGGS\n", []),  # not a literal: nothing is executed
        ("import sys\nsys.path.append('/x')\n", []),
        ("this is not python(\n", []),
    ],
)
def test_plugin_sys_path_reads_the_literal_only(
    tmp_path: Path, source: str, entries: list[str]
) -> None:
    path = tmp_path / "plugin.py"
    path.write_text(source)
    assert plugin_sys_path(path) == entries
