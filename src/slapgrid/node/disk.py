"""Free space checks before the agent writes much: a build or a partition's deployment.

One check serves both; the option that sets the limit is named in the error, so an operator
knows which of `software_min_free_space` and `instance_min_free_space` to lower.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from slapgrid.errors import SlapgridError


class DiskSpaceError(SlapgridError):
    """Not enough free space to build or deploy; names the option that sets the limit."""


def format_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def check_free_space(directory: Path, required: int, option: str) -> None:
    """Space available to non-root users on the file system that will hold `directory`."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    available = shutil.disk_usage(existing).free
    if available < required:
        raise DiskSpaceError(
            f"not enough space for {directory}: {format_bytes(available)} available, "
            f"{format_bytes(required)} required (option '{option}')"
        )
