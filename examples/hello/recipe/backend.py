"""A minimal in-tree PEP 517 backend, so that developing this package needs no download.

zc.buildout develops eggs with `pip install -e`, which builds in an isolated environment:
with setuptools as backend that means fetching setuptools from PyPI on every software
build (several seconds, and network). This backend only needs the standard library: it
reads `[project]` from pyproject.toml and zips the metadata with either the sources
(`build_wheel`) or a `.pth` pointing at them (`build_editable`).
"""

from __future__ import annotations

import base64
import hashlib
import tomllib
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "src"


def _project() -> dict:
    with (HERE / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)["project"]


def _dist_info(project: dict) -> dict[str, str]:
    name = project["name"].replace("-", "_")
    prefix = f"{name}-{project['version']}.dist-info"
    metadata = [
        "Metadata-Version: 2.1",
        f"Name: {project['name']}",
        f"Version: {project['version']}",
        f"Summary: {project.get('description', '')}",
        f"Requires-Python: {project.get('requires-python', '')}",
    ]
    entry_points = "".join(
        f"[{group}]\n" + "".join(f"{key} = {value}\n" for key, value in points.items()) + "\n"
        for group, points in project.get("entry-points", {}).items()
    )
    return {
        f"{prefix}/METADATA": "\n".join(metadata) + "\n",
        f"{prefix}/WHEEL": "Wheel-Version: 1.0\nGenerator: backend.py\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n",
        f"{prefix}/entry_points.txt": entry_points,
    }


def _wheel(directory: str, files: dict[str, bytes]) -> str:
    project = _project()
    name = project["name"].replace("-", "_")
    files = {**files, **{k: v.encode() for k, v in _dist_info(project).items()}}
    record_name = f"{name}-{project['version']}.dist-info/RECORD"
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{record_name},,")
    wheel_name = f"{name}-{project['version']}-py3-none-any.whl"
    with zipfile.ZipFile(Path(directory) / wheel_name, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(record_name, "\n".join(record) + "\n")
    return wheel_name


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    files = {
        path.relative_to(SOURCES).as_posix(): path.read_bytes()
        for path in sorted(SOURCES.rglob("*.py"))
    }
    return _wheel(wheel_directory, files)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    name = _project()["name"].replace("-", "_")
    return _wheel(wheel_directory, {f"__editable__.{name}.pth": f"{SOURCES}\n".encode()})
