"""`slapgrid software` destroying software releases: removal, and refusal while used."""

from __future__ import annotations

from pathlib import Path

import pytest

from slapgrid.node.software.run import run_software
from support.software_releases import TINY, Master, Release, make_config, profile, software_dir

pytestmark = pytest.mark.integration


def test_destroy_removes_read_only_directory_and_reports(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    url = profile(tmp_path, "tiny.cfg", TINY)
    assert run_software(config, Master(Release(url))).status == 0
    directory = software_dir(config, url)
    locked = directory / "parts" / "read-only"
    locked.mkdir()
    (locked / "file").write_text("x")
    locked.chmod(0o500)
    master = Master(Release(url, "destroyed"))
    assert run_software(config, master).status == 0
    assert not directory.exists()
    assert master.calls == [("destroyed", url)]


def test_destroy_is_refused_while_a_partition_uses_the_software(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    url = profile(tmp_path, "tiny.cfg", TINY)
    assert run_software(config, Master(Release(url))).status == 0
    partition = config.instance_root / "slappart3"
    partition.mkdir()
    (partition / "software_release").symlink_to(software_dir(config, url))
    master = Master(Release(url, "destroyed"))
    assert run_software(config, master).status == 1
    assert software_dir(config, url).is_dir()
    assert master.calls == [("error", url)]
    assert "slappart3" in master.errors[url]
