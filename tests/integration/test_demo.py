"""`make demo` end to end, with HOME in a temporary directory: nothing is written there.

The demo keeps everything under its directory: `show` asks the master instead of a file in
~/.local/state, and the build and the deployment stay in the demo's roots.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.py"


def test_the_demo_writes_nothing_outside_its_directory(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "SLAP"))}
    env.update(HOME=str(home), COLUMNS="80")
    result = subprocess.run(
        [sys.executable, str(DEMO), "--directory", str(tmp_path / "demo")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(home.rglob("*")) == []
    status = result.stdout.split("$ slapgrid status", 1)[1].split("\ndemo:", 1)[0]
    status = status.split("\n", 1)[1]  # after the command line the demo echoes
    assert max(len(line) for line in status.splitlines()) <= 80, status
    assert "hello" in status and "ago" in status  # the instance's name, ages in words
    # node 2 installed the release node 1 uploaded to the master's cache, building nothing
    second = result.stdout.split("$ slapgrid status", 2)[2].split("\ndemo:", 1)[0]
    assert "from cache" in second, second
    assert "installed the release from cache" in result.stdout
    assert "Installing hello-source" not in result.stdout.split("slapos-2.cfg", 1)[1]  # no build
