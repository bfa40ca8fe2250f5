"""The agent's status file: where it lives, and reading it for `slapgrid status`.

Kept apart from the loop so that `slapgrid status` reads it without importing the agent.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import psutil

from slapgrid.node import layout
from slapgrid.node.config import NodeConfig
from slapgrid.node.files import atomic_write, read_text

log = logging.getLogger(__name__)


def location(config: NodeConfig) -> Path:
    """`[slapos] status_file`, else `<instance_root>/.slapgrid/daemon.json`."""
    return config.status_file or layout.daemon_status(config.instance_root)


def read_status(config: NodeConfig) -> dict[str, Any] | None:
    """The daemon's status file for `slapgrid status`, with whether its process still lives."""
    text = read_text(location(config))
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    pid = data.get("pid")
    alive = isinstance(pid, int) and psutil.pid_exists(pid) and data.get("state") != "stopped"
    data["alive"] = alive
    return data


class StatusWriter:
    """Rewrites the file only when something in it changed, `updated_at` aside."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._written = ""

    def write(self, status: dict[str, Any]) -> None:
        text = json.dumps({**status, "updated_at": None}, sort_keys=True)
        if text == self._written:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, json.dumps(status, indent=1), 0o644)
        except OSError as exc:
            log.warning("cannot write the status file %s: %s", self.path, exc)
        else:
            self._written = text
