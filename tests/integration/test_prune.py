"""`slapgrid prune` for real: the command line in a child process, a live embedded master
over HTTP, software and shared-part directories on disk as builds leave them."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nodes import COMPUTER, Node, embedded_master, node_flags
from reference_env import free_port
from slapgrid.exit_status import ExitStatus
from slapgrid.node import layout
from slapgrid.node.safety import software_hash
from slapgrid.slap.client import SlapClient
from support.commands import slapgrid

pytestmark = pytest.mark.integration

KEPT, USED, GONE, DESTROYED = (
    f"http://sr.invalid/{name}.cfg" for name in ("kept", "used", "gone", "destroyed")
)


@dataclass
class Site:
    root: Path
    flags: list[str]

    @property
    def software(self) -> Path:
        return self.root / "software"

    @property
    def shared(self) -> Path:
        return self.root / "shared"

    def release(self, url: str, installed: str = "", script: str = "") -> Path:
        """A built release: its buildout.cfg, .installed.cfg and one bin script."""
        directory = self.software / software_hash(url)
        (directory / "bin").mkdir(parents=True)
        (directory / layout.SOFTWARE_PROFILE).write_text(f"[buildout]\nextends = {url}\n")
        (directory / ".installed.cfg").write_text(installed)
        (directory / "bin" / "python").write_text(script)
        (directory / layout.COMPLETED).write_text("done\n")
        return directory

    def part(self, name: str, signature: str = "") -> Path:
        path = self.shared / name
        path.mkdir(parents=True)
        (path / ".buildout-shared.json").write_text(signature)
        (path / "lib").mkdir()
        (path / "lib" / "libz.so").write_text("binary")
        return path


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """Releases kept (the master wants it), used (a partition links it), gone (nobody) and
    destroyed (the master's, left to `slapgrid software`); shared parts used by each."""
    with embedded_master(tmp_path) as server:
        flags = node_flags(server.url, tmp_path)
        config = tmp_path / "slapos.cfg"
        config.write_text(f"[slapos]\nshared_part_list =\n  {tmp_path / 'shared'}\n")
        site = Site(tmp_path, ["--cfg", str(config), *flags])
        with SlapClient(server.url, COMPUTER) as client:
            client.supply(KEPT)
            client.supply(DESTROYED, state="destroyed")
        site.release(KEPT, installed=f"location = {site.shared}/zlib/1111\n")
        used = site.release(USED, script=f"#!{site.shared}/python/2222/bin/python\n")
        site.release(GONE, installed=f"location = {site.shared}/perl/3333\n")
        site.release(DESTROYED)
        partition = tmp_path / "instance" / "slappart0"
        partition.mkdir()
        (partition / "software_release").symlink_to(used)
        site.part("zlib/1111")
        site.part("python/2222", signature=f"needs {site.shared}/readline/5555")
        site.part("readline/5555")
        site.part("perl/3333")
        site.part("orphan/4444")
        yield site


def gone_paths(site: Site) -> list[Path]:
    return [
        site.software / software_hash(GONE),
        site.shared / "perl/3333",
        site.shared / "orphan/4444",
    ]


def kept_paths(site: Site) -> list[Path]:
    return [
        *(site.software / software_hash(url) for url in (KEPT, USED, DESTROYED)),
        *(site.shared / name for name in ("zlib/1111", "python/2222", "readline/5555")),
    ]


def test_dry_run_lists_what_would_go_and_why_and_removes_nothing(site: Site) -> None:
    done = slapgrid("prune", *site.flags, "--dry-run")
    assert done.returncode == ExitStatus.OK, done.stderr
    lines = done.stdout.splitlines()
    gone = software_hash(GONE)
    assert (
        f"would remove software {site.software}/{gone} ({GONE}): the master does not list"
        in done.stdout
    )
    assert any(
        line.startswith("would remove shared-part") and "perl/3333" in line for line in lines
    )
    assert any("orphan/4444" in line and "no software, instance or part" in line for line in lines)
    assert any(software_hash(USED) in line and "used by slappart0" in line for line in lines)
    assert any(software_hash(DESTROYED) in line and "slapgrid software" in line for line in lines)
    assert any("readline/5555" in line and "python/2222" in line for line in lines)
    assert all(path.exists() for path in gone_paths(site) + kept_paths(site))


def test_prune_removes_only_what_nothing_uses(site: Site) -> None:
    outside = site.root / "outside"
    outside.mkdir()
    (site.software / ("f" * 32)).symlink_to(outside)  # a link named as a release
    (site.software / "notes").mkdir()
    done = slapgrid("prune", *site.flags)
    assert done.returncode == ExitStatus.OK, done.stderr
    assert done.stdout.count("removed ") == 3, done.stdout
    assert not any(path.exists() for path in gone_paths(site))
    assert all(path.exists() for path in kept_paths(site))
    assert outside.exists() and (site.software / "notes").exists()
    assert (site.software / ("f" * 32)).is_symlink()
    again = slapgrid("prune", *site.flags)
    assert (again.returncode, again.stdout) == (ExitStatus.OK, "nothing to prune\n")


def test_an_additional_software_directory_keeps_its_shared_parts(site: Site) -> None:
    other = site.root / "other-software"
    (other / ("e" * 32)).mkdir(parents=True)
    (other / ("e" * 32) / ".installed.cfg").write_text(f"x = {site.shared}/orphan/4444\n")
    done = slapgrid("prune", *site.flags, "--additional-software-directory", str(other))
    assert done.returncode == ExitStatus.OK, done.stderr
    assert (site.shared / "orphan/4444").exists()
    assert not (site.shared / "perl/3333").exists()
    assert (other / ("e" * 32)).exists()


def test_without_the_master_only_shared_parts_are_pruned(site: Site) -> None:
    flags = list(site.flags)
    flags[flags.index("--master-url") + 1] = f"http://127.0.0.1:{free_port()}/"
    done = slapgrid("prune", *flags)
    assert done.returncode == ExitStatus.OFFLINE, done.stderr
    assert "Traceback" not in done.stderr
    assert "master unreachable, no release pruned" in done.stderr
    assert (site.software / software_hash(GONE)).exists()
    assert not (site.shared / "orphan/4444").exists()
    assert (site.shared / "perl/3333").exists()  # the kept release `gone` still uses it


def test_a_running_build_makes_prune_refuse(site: Site) -> None:
    lock = layout.software_lock(site.software, KEPT)
    lock.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        done = slapgrid("prune", *site.flags)
    finally:
        os.close(descriptor)
    assert done.returncode == ExitStatus.LOCKED, done.stderr
    assert "Traceback" not in done.stderr
    assert f"building or removing {software_hash(KEPT)}" in done.stderr
    assert all(path.exists() for path in gone_paths(site))


def test_a_deployed_node_keeps_its_release(node: Node) -> None:
    """The real layout: a deployed partition's link to the built example release."""
    node.request()
    assert node.instance() == ExitStatus.OK
    done = slapgrid("prune", *node.flags(), "--dry-run")
    assert done.returncode == ExitStatus.OK, done.stderr
    pid = node.partition()
    assert f"used by {pid}" in done.stdout
    assert "would remove software" not in done.stdout
