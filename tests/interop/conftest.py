"""The reference implementation for interop tests: slapos.core 1.26.1 in `.venv-ref`.

The venv lives in the project root and is reused when present. Creating it needs a
Python >= 3.12 (1.26.1's node code cannot be imported on 3.11) and PyPI; without such a
Python the interop tests are skipped, any other failure fails them.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from filelock import FileLock

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-ref"
PACKAGES = ("slapos.core==1.26.1", "slapos.libnetworkcache")
INSTALL_TIMEOUT = 1800


def _version(python: str) -> tuple[int, int] | None:
    try:
        result = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    major, minor = result.stdout.split()
    return int(major), int(minor)


def find_python() -> str | None:
    """A Python >= 3.12 from PATH (python3.12, python3.13) or pyenv."""
    candidates = [shutil.which(name) for name in ("python3.12", "python3.13")]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[2-9]*/bin/python3")))
    for candidate in filter(None, candidates):
        version = _version(candidate)
        if version is not None and version >= (3, 12):
            return candidate
    return None


def _usable(venv: Path) -> bool:
    python = venv / "bin" / "python"
    if not python.exists():
        return False
    check = "import slapos.slap, slapos.proxy, slapos.libnetworkcache"
    return subprocess.run([python, "-c", check], capture_output=True, timeout=120).returncode == 0


@pytest.fixture(scope="session")
def reference_venv() -> Path:
    """`.venv-ref` with slapos.core 1.26.1 and slapos.libnetworkcache, created if missing."""
    with FileLock(Path(tempfile.gettempdir()) / "slapgrid-venv-ref.lock"):
        if _usable(VENV):
            return VENV
        python = find_python()
        if python is None:
            pytest.skip("interop needs Python >= 3.12 (python3.12/3.13 or ~/.pyenv) for 1.26.1")
        shutil.rmtree(VENV, ignore_errors=True)
        subprocess.run([python, "-m", "venv", str(VENV)], check=True, timeout=300)
        result = subprocess.run(
            [str(VENV / "bin" / "pip"), "install", "--quiet", *PACKAGES],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
        )
        if result.returncode != 0 or not _usable(VENV):
            pytest.fail(f"cannot install {' '.join(PACKAGES)}:\n{result.stderr[-3000:]}")
        return VENV


@pytest.fixture(scope="session")
def reference_python(reference_venv: Path) -> Path:
    return reference_venv / "bin" / "python"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def reference_proxy(reference_venv: Path, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """`slapos proxy start` on a free port: yields (url, default computer id)."""
    computer, port = "COMP-PROXY", free_port()
    config = tmp_path / "slapos-proxy.cfg"
    config.write_text(
        f"[slapos]\ncomputer_id = {computer}\n[slapproxy]\nhost = 127.0.0.1\nport = {port}\n"
        f"database_uri = {tmp_path / 'proxy.db'}\n"
    )
    log = tmp_path / "proxy.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(reference_venv / "bin" / "slapos"), "proxy", "start", "--cfg", str(config)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url + "getRunId", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"slapos proxy did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.1)
        yield url, computer
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
