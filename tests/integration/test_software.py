"""`slapgrid software` with the real zc.buildout: examples/hello from scratch, failures,
a selection of releases, the space it needs, a no-op run.

The master of `run_software` is a small recorder of the five calls a software run makes
(support.software_releases.Master)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from slapgrid.node.safety import software_hash
from slapgrid.node.software.run import run_software
from support.software_releases import (
    HELLO,
    TINY,
    Master,
    Release,
    make_config,
    profile,
    software_dir,
)

pytestmark = pytest.mark.integration


def test_hello_builds_from_scratch_and_reports_in_order(hello: SimpleNamespace) -> None:
    assert hello.code == 0, hello.master.errors
    url = str(HELLO)
    assert hello.master.calls == [("building", url), ("available", url)]
    software = hello.software
    assert (software / ".completed").is_file()
    assert (software / "buildout.cfg").read_text().startswith(f"[buildout]\nextends = {url}\n")
    assert (software / "instance.cfg").is_file()
    assert "Installing instance-profile." in (software / ".slapgrid" / "build.log").read_text()
    # The pitfall: the PyPI egg is reachable from develop-eggs for offline instance runs.
    link = software / "develop-eggs" / "slapos.recipe.build.egg-link"
    target = Path(link.read_text().strip())  # relative: the release is relocatable
    assert not target.is_absolute() and target.parts[:2] == ("..", "eggs")
    assert (link.parent / target).is_dir()
    assert "software_release/eggs" in (software / "instance.cfg").read_text()
    print(f"\nexamples/hello built from scratch in {hello.duration:.1f} s")


def test_built_software_is_not_rebuilt_nor_reported(hello: SimpleNamespace) -> None:
    master = Master(Release(str(HELLO)))
    log = hello.software / ".slapgrid" / "build.log"
    before = log.stat().st_mtime_ns
    assert run_software(hello.config, master).status == 0
    assert master.calls == []
    assert log.stat().st_mtime_ns == before


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "bad-recipe.cfg",
            TINY.replace("zc.buildout:debug", "zc.buildout:nonexistent"),
            "Entry point ('zc.buildout', 'nonexistent') not found",
        ),
        ("syntax.cfg", "[buildout\nparts =\n", "File contains no section headers"),
        ("missing.cfg", None, "No such file or directory"),
    ],
)
def test_failing_software_is_reported_and_not_completed(
    tmp_path: Path,
    name: str,
    text: str | None,
    expected: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = make_config(tmp_path)
    url = profile(tmp_path, name, text) if text is not None else str(tmp_path / name)
    good = profile(tmp_path, "good.cfg", TINY)
    master = Master(Release(url), Release(good))
    with caplog.at_level(logging.INFO, logger="slapgrid"):
        assert run_software(config, master).status == 1
    # the ERROR line says why and where the whole log is
    [error] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    build_log = software_dir(config, url) / ".slapgrid" / "build.log"
    assert error.startswith(f"{url}: ") and expected in error
    assert error.endswith(f"(see {build_log})") and "exit code" not in error
    # each build line carries the release's short hash
    output = [r.getMessage() for r in caplog.records if getattr(r, "software", None) == good]
    assert f"[{software_hash(good)[:8]}] Installing hello." in output
    assert ("building", url) in master.calls and ("error", url) in master.calls
    assert ("available", url) not in master.calls
    assert expected in master.errors[url]
    assert not (software_dir(config, url) / ".completed").exists()
    # the other release is not held back by the failure
    assert ("available", good) in master.calls
    assert (software_dir(config, good) / ".completed").exists()


def test_only_sr_filters_by_url_or_hash(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    first = profile(tmp_path, "first.cfg", TINY)
    second = profile(tmp_path, "second.cfg", TINY)
    master = Master(Release(first), Release(second))
    assert run_software(config, master, only_sr=[software_hash(second)]).status == 0
    assert master.calls == [("building", second), ("available", second)]
    assert not software_dir(config, first).exists()


def test_not_enough_space_names_the_option(tmp_path: Path) -> None:
    config = make_config(tmp_path, software_min_free_space=1 << 60)
    url = profile(tmp_path, "tiny.cfg", TINY)
    master = Master(Release(url))
    assert run_software(config, master).status == 1
    assert "software_min_free_space" in master.errors[url]
    assert master.calls == [("error", url)]


def test_noop_run_with_five_built_software_releases(tmp_path: Path) -> None:
    config = make_config(tmp_path, jobs=5)
    urls = [profile(tmp_path, f"sr{index}.cfg", TINY) for index in range(5)]
    assert run_software(config, Master(*map(Release, urls))).status == 0
    master = Master(*map(Release, urls))
    started = time.monotonic()
    assert run_software(config, master).status == 0
    elapsed = time.monotonic() - started
    assert master.calls == []
    assert elapsed < 1.0
    print(f"\nno-op run_software with 5 built SRs: {elapsed * 1000:.1f} ms")
