"""`slapgrid` run as a user types it, in its own process, and what its errors must look like."""

from __future__ import annotations

import subprocess
import sys


def slapgrid(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`slapgrid ARGV` with this interpreter: exit status, output and error output."""
    return subprocess.run(
        [sys.executable, "-m", "slapgrid", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The only `slapgrid:` line of the error output, checked to come with no traceback."""
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("slapgrid:")]
    assert len(lines) == 1, done.stderr
    return lines[0]
