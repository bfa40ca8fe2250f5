"""Scripts an instance ships for `slapgrid report`: `etc/report/*` and `sbin/destroy`.

They run as the partition's owner, HOME its home, in a clean environment, bounded in time;
a failure is a message for the master, never an exception that stops the run.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from slapgrid.node.identity import home_of
from slapgrid.node.process import ProcessError, run
from slapgrid.node.report.usage_files import REPORT_DIR

log = logging.getLogger(__name__)

SCRIPT_TIMEOUT = 300.0
OUTPUT_TAIL = 2000


def run_instance_script(
    argv: Sequence[str], partition_path: Path, *, cwd: Path, timeout: float
) -> str | None:
    """Run a script the instance ships, as the partition owner (HOME = the owner's home,
    clean environment); None when it succeeded, else why not, with the end of its output."""
    script = argv[0]
    try:
        result = run(
            argv,
            cwd=cwd,
            home=home_of(partition_path),
            owner_of=partition_path,
            timeout=timeout,
            output=lambda line: log.debug("%s: %s", script, line),
        )
    except (ProcessError, OSError) as exc:
        return str(exc)
    if result.ok:
        return None
    why = f"killed after {timeout:g} s" if result.timed_out else f"exit code {result.returncode}"
    output = result.tail.strip()[-OUTPUT_TAIL:]
    return why + (f", output:\n{output}" if output else "")


def run_report_scripts(partition_path: Path, timeout: float = SCRIPT_TIMEOUT) -> list[str]:
    """Run each entry of `P/etc/report/`; one message per failure.

    Each gets one argument, an unused name under `P/var/xml_report/` to write its report to
    (the directory is the instance's to create), and runs in `P/etc/report`.
    """
    directory = partition_path / "etc" / "report"
    try:
        names = sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        return [f"Cannot list {directory}: {exc.strerror}."]
    failures = []
    for name in names:
        output = partition_path.joinpath(*REPORT_DIR) / f"slapreport.{secrets.token_hex(4)}"
        while output.exists():
            output = output.with_name(f"slapreport.{secrets.token_hex(4)}")
        script = directory / name
        problem = run_instance_script(
            [str(script), str(output)], partition_path, cwd=directory, timeout=timeout
        )
        if problem is None:
            log.info("Report script %s succeeded", script)
            continue
        log.warning("Report script %s failed: %s", script, problem.splitlines()[0])
        failures.append(f"Script {name!r} failed ({problem}).")
    return failures
