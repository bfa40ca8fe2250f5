"""Processes a test watches: the ones multiprocessing spawned, and whether one has ended."""

from __future__ import annotations

import psutil


def spawned(parent: psutil.Process) -> list[psutil.Process]:
    """The processes multiprocessing spawned for `parent` (a master's render process), not
    its resource tracker."""
    return [child for child in parent.children() if "spawn_main" in " ".join(child.cmdline())]


def ended(process: psutil.Process) -> bool:
    """Gone, or a zombie its parent has not collected yet."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
