"""The cache's archives: what is left out of an upload, what an unpacked one may hold."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from slapgrid.node.software.cache.transfer import archive, unpack

NAME = "0" * 32


def test_the_archive_is_the_release_without_credentials_markers_or_logs(tmp_path: Path) -> None:
    release = tmp_path / NAME
    (release / "bin").mkdir(parents=True)
    (release / "bin" / "buildout").write_text("#!/bin/sh\n")
    (release / ".slapgrid").mkdir()
    (release / ".slapgrid" / "build.log").write_text("log")
    for name in (".netrc", ".completed"):
        (release / name).write_text("x")
    (tmp_path / "out").mkdir()
    with tarfile.open(archive(release, tmp_path / "out")) as tar:
        assert sorted(tar.getnames()) == [NAME, f"{NAME}/bin", f"{NAME}/bin/buildout"]
    unpack(tmp_path / "out" / f"{NAME}.tar.gz", tmp_path / "into", NAME)
    assert (tmp_path / "into" / NAME / "bin" / "buildout").read_text() == "#!/bin/sh\n"


def _tar(path: Path, *names: str, link: str | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            if link is not None and name.endswith("link"):
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            else:
                info.size = 2
                tar.addfile(info, io.BytesIO(b"hi"))
    return path


@pytest.mark.parametrize(
    ("names", "link"),
    [
        ((f"{NAME}/a", "other/b"), None),  # another directory
        ((f"{NAME}/../escape",), None),  # outside, by name
        ((f"{NAME}/link", f"{NAME}/link/passwd"), "/etc"),  # outside, through a link
        ((), None),  # empty
    ],
)
def test_a_hostile_archive_is_refused(
    tmp_path: Path, names: tuple[str, ...], link: str | None
) -> None:
    path = _tar(tmp_path / "a.tar.gz", *names, link=link)
    with pytest.raises((ValueError, tarfile.TarError)):
        unpack(path, tmp_path / "into", NAME)
    assert not Path("/etc/passwd").read_text().startswith("hi")
