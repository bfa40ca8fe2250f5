"""Plugins written for slapos.core, run through the release's own slapos.core launcher.

The "release" here is the reference's virtual environment: its Python stands as the
interpreter of the release's `bin/buildout`, and the plugins put its site-packages on
`sys.path`, as `slapos.cookbook:promise.plugin` puts a release's eggs.
"""

from __future__ import annotations

import json
import pwd
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import reference_env
from slapgrid.node.layout import PartitionPaths
from slapgrid.node.promises.results import ANOMALY, TEST
from slapgrid.node.promises.run import run_promises

pytestmark = [pytest.mark.integration, pytest.mark.interop]

GENERIC_PLUGIN = """\
import sys
sys.path[0:0] = {sys_path!r}
extra_config_dict = {extra!r}

import os
from zope.interface import implementer
from slapos.grid.promise import interface
from slapos.grid.promise.generic import GenericPromise


@implementer(interface.IPromise)
class RunPromise(GenericPromise):
    def __init__(self, config):
        super(RunPromise, self).__init__(config)
        self.setPeriodicity(minute=10)

    def sense(self):
        marker = self.getConfig("marker")
        if os.path.exists(marker):
            self.logger.info("%s is there (uid %d)", marker, os.getuid())
        else:
            self.logger.error("%s is missing", marker)

    def test(self):
        return self._test(result_count=1, failure_amount=1)

    def anomaly(self):
        return self._anomaly(result_count=1, failure_amount=1)
"""

OWN_PLUGIN = """\
from slapgrid.node.promises.plugin_runner import Promise

extra_config_dict = {"word": "hello"}


class RunPromise(Promise):
    def sense(self):
        self.logger.info("said %s", self.config["word"])
"""


@pytest.fixture
def release(reference_venv: Path) -> Path:
    """A release directory whose `bin/buildout` runs with the reference's Python."""
    software = reference_env.public_tempdir("release")
    (software / "bin").mkdir()
    (software / "bin" / "buildout").write_text(f"#!{reference_venv}/bin/python\n")
    yield software
    shutil.rmtree(software, ignore_errors=True)


@pytest.fixture
def partition(reference_venv: Path) -> Iterator[Path]:
    """A partition owned by an account that is not root, as on a formatted node."""
    user = reference_env.node_user(reference_venv / "bin" / "python")
    root = reference_env.public_tempdir("generic")
    path = root / "slappart0"
    path.mkdir(mode=0o750)
    reference_env.give_to(user, path)
    yield path
    shutil.rmtree(root, ignore_errors=True)


def site_packages(venv: Path) -> str:
    [found] = venv.glob("lib/python3*/site-packages")
    return str(found)


def add_generic(partition: Path, name: str, eggs: str, marker: Path) -> Path:
    """A plugin as `slapos.cookbook:promise.plugin` writes one, `eggs` on its sys.path."""
    path = partition / "etc" / "plugin" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {"marker": str(marker)}
    path.write_text(GENERIC_PLUGIN.format(sys_path=[eggs], extra=extra))
    return path


def deployed(partition: Path) -> Path:
    """What the instance's buildout wrote belongs to the partition's user."""
    reference_env.give_to(pwd.getpwuid(partition.stat().st_uid), partition)
    return partition


def test_a_slapos_core_plugin_runs_as_the_reference_runs_it(
    reference_venv: Path, release: Path, partition: Path
) -> None:
    marker = partition / "ready"
    marker.write_text("")
    add_generic(partition, "check-marker-is-there.py", site_packages(reference_venv), marker)

    report = run_promises(
        deployed(partition), mode=TEST, software=release, config={"partition-id": "p0"}
    )

    [result] = report.results
    assert (result.title, result.failed) == ("check-marker-is-there", False)
    owner = partition.stat().st_uid
    assert result.message == f"{marker} is there (uid {owner})"  # ran as the partition's user
    paths = PartitionPaths(partition)
    stored = json.loads(paths.promise_result("check-marker-is-there").read_text())
    assert set(stored) >= {"title", "name", "path", "execution-time", "result"}
    assert set(stored["result"]) >= {"type", "failed", "date", "message"}
    assert stored["result"]["type"] == "Test Result"
    assert stored["name"] == "check-marker-is-there.py"
    log = paths.promise_dir / "log" / "check-marker-is-there.log"
    assert "is there" in log.read_text()


def test_a_failing_slapos_core_plugin_fails_with_its_message(
    reference_venv: Path, release: Path, partition: Path
) -> None:
    missing = partition / "missing"
    add_generic(partition, "check-missing.py", site_packages(reference_venv), missing)

    report = run_promises(deployed(partition), mode=TEST, software=release)

    assert report.failed
    assert report.error_message == (
        f"Promise 'check-missing.py' failed with output: {missing} is missing"
    )


def test_mixed_partition_and_anomaly_periodicity(
    reference_venv: Path, release: Path, partition: Path
) -> None:
    """slapgrid's own plugins and legacy promises run beside the launcher's; in anomaly mode
    a promise whose periodicity has not elapsed keeps its last result."""
    marker = partition / "ready"
    marker.write_text("")
    add_generic(partition, "generic.py", site_packages(reference_venv), marker)
    own = partition / "etc" / "plugin" / "own.py"
    own.write_text(OWN_PLUGIN)
    legacy = partition / "etc" / "promise" / "legacy"
    legacy.parent.mkdir(parents=True)
    legacy.write_text("#!/bin/sh\necho fine\n")
    legacy.chmod(0o755)

    first = run_promises(deployed(partition), mode=TEST, software=release)
    assert {r.title: (r.failed, r.message) for r in first.results} == {
        "generic": (False, f"{marker} is there (uid {partition.stat().st_uid})"),
        "own": (False, "said hello"),  # extra_config_dict reaches slapgrid's plugins too
        "legacy": (False, "fine"),
    }

    log = PartitionPaths(partition).promise_dir / "log" / "generic.log"
    launched = log.read_text()
    again = run_promises(partition, mode=ANOMALY, software=release, fresh_after=0.0)
    generic = {r.title: r for r in again.results}["generic"]
    assert generic.reused and not generic.failed
    assert log.read_text() == launched  # nothing due: the launcher was not even started

    cache = PartitionPaths(partition).promise_cache("generic")
    cache.write_text(json.dumps({**json.loads(cache.read_text()), "next_run_after": 0}))
    due = run_promises(partition, mode=ANOMALY, software=release, fresh_after=0.0)
    generic = {r.title: r for r in due.results}["generic"]
    assert not generic.reused and generic.type == "Anomaly Result"


def test_a_release_without_slapos_core_fails_the_promise_saying_why(
    reference_venv: Path, partition: Path, tmp_path: Path
) -> None:
    software = reference_env.public_tempdir("bare")
    try:
        (software / "bin").mkdir()
        (software / "bin" / "buildout").write_text(f"#!{sys.executable}\n")
        add_generic(partition, "check.py", str(tmp_path / "no-eggs"), partition)

        report = run_promises(deployed(partition), mode=TEST, software=software)
    finally:
        shutil.rmtree(software, ignore_errors=True)

    [result] = report.results
    assert result.failed
    assert "cannot import slapos.core's promise launcher" in (result.message or "")


def test_a_release_whose_python_is_gone_fails_the_promise_saying_why(
    reference_venv: Path, partition: Path
) -> None:
    software = reference_env.public_tempdir("gone")
    try:
        (software / "bin").mkdir()
        (software / "bin" / "buildout").write_text(f"#!{software}/bin/python-removed\n")
        add_generic(partition, "check.py", site_packages(reference_venv), partition)

        report = run_promises(deployed(partition), mode=TEST, software=software)
    finally:
        shutil.rmtree(software, ignore_errors=True)

    [result] = report.results
    assert result.failed
    assert "cannot run the release's Python" in (result.message or "")
