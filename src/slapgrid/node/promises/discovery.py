"""Finding a partition's promises: plugins in `P/etc/plugin/`, legacy ones in `P/etc/promise/`."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from slapgrid.node import layout

log = logging.getLogger(__name__)

_SLAPOS_CORE_PLUGIN = re.compile(
    rb"^(?:[ \t]*(?:from|import)[ \t]+slapos\.|sys\.path\[0?:0\][ \t]*=)", re.MULTILINE
)
"""How a plugin written for slapos.core shows itself: it imports slapos, or puts its release's
eggs on sys.path as `slapos.cookbook:promise.plugin` writes it (whose `file` option execs the
real plugin from elsewhere). slapgrid's own plugins need neither."""


@dataclass(frozen=True)
class PromiseFile:
    """A promise found in the partition: `title` is its file name without extension."""

    name: str
    path: Path
    plugin: bool
    generic: bool = False
    """A plugin written for slapos.core (`GenericPromise`): the release's launcher runs it."""

    @property
    def title(self) -> str:
        return self.path.stem if self.plugin else self.name


def discover(partition_path: Path) -> list[PromiseFile]:
    """Plugins (`etc/plugin/*.py`) then legacy executables (`etc/promise/*`), each sorted.

    Any `*.py` but `__init__*` is a plugin, as for the reference: SlapOS stacks ship names
    such as `monitor-httpd-listening-on-tcp.py`.
    """
    paths = layout.PartitionPaths(Path(partition_path))
    found: list[PromiseFile] = []
    plugin_dir = paths.etc("plugin")
    for name in _listdir(plugin_dir):
        if name.endswith(".py") and not name.startswith("__init__"):
            path = plugin_dir / name
            found.append(PromiseFile(name, path, plugin=True, generic=_uses_slapos_core(path)))
    legacy_dir = paths.etc("promise")
    for name in _listdir(legacy_dir):
        path = legacy_dir / name
        if path.is_file() and os.access(path, os.X_OK):
            found.append(PromiseFile(name, path, plugin=False))
        else:
            log.warning("Bad promise file at %s: not an executable file", path)
    return found


def _uses_slapos_core(path: Path) -> bool:
    try:
        return _SLAPOS_CORE_PLUGIN.search(path.read_bytes()) is not None
    except OSError:
        return False


def _listdir(directory: Path) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
