"""The real command line: a refused configuration is one line and exit 2, warnings one each.

Unit tests (tests/unit/test_config_checks.py, test_reference_flags.py) cover every case;
these run `python -m slapgrid` as a user would, to see exactly what reaches stderr.
"""

from __future__ import annotations

from pathlib import Path

from support.commands import slapgrid
from support.configs import write_slapos_cfg


def test_a_refused_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = write_slapos_cfg(tmp_path, "maximum_periodicity = -5")
    done = slapgrid("--cfg", str(path), "instance")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "slapgrid: error: option 'maximum_periodicity' must be a positive whole number of "
        f"seconds, not '-5' ([slapos] of {path})"
    ]


def test_a_refused_flag_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = slapgrid(
        "--configuration-file",
        "=",
        str(write_slapos_cfg(tmp_path)),
        "instance",
        "--promise-timeout",
        "0",
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "slapgrid: error: option 'promise_timeout' must be a positive number of seconds, "
        "not '0' (--promise-timeout)"
    ]


def test_the_seeds_example_runs_and_warns_once(tmp_path: Path) -> None:
    path = write_slapos_cfg(tmp_path, "[networkcache]\ndownload-cache-url = http://c/\n")
    done = slapgrid("--configuration-file", "=", str(path), "status", "--json")
    assert done.returncode == 0, done.stderr
    [warning] = done.stderr.splitlines()
    assert (
        "WARNING" in warning and f"[networkcache] download-cache-url in {path}: not read" in warning
    )


def test_a_reference_flag_is_explained_in_one_line(tmp_path: Path) -> None:
    done = slapgrid("status", "--cfg", str(write_slapos_cfg(tmp_path)), "--json")
    assert done.returncode == 0 and done.stderr == ""
    done = slapgrid(
        "--pidfile", "/run/slapgrid-cp.pid", "status", "--cfg", str(write_slapos_cfg(tmp_path))
    )
    assert done.returncode == 0
    [line] = done.stderr.splitlines()
    assert "WARNING" in line and "--pidfile: no pid file is written" in line
