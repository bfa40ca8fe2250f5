"""Finding a partition's promises: plugins in `P/etc/plugin/`, legacy ones in `P/etc/promise/`."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from slapgrid.node import layout

log = logging.getLogger(__name__)

_PLUGIN_NAME = re.compile(r"[A-Za-z_]\w*\.py")


@dataclass(frozen=True)
class PromiseFile:
    """A promise found in the partition: `title` is its file name without extension."""

    name: str
    path: Path
    plugin: bool

    @property
    def title(self) -> str:
        return self.path.stem if self.plugin else self.name


def discover(partition_path: Path) -> list[PromiseFile]:
    """Plugins (`etc/plugin/*.py`) then legacy executables (`etc/promise/*`), each sorted."""
    paths = layout.PartitionPaths(Path(partition_path))
    found: list[PromiseFile] = []
    plugin_dir = paths.etc("plugin")
    for name in _listdir(plugin_dir):
        if _PLUGIN_NAME.fullmatch(name) and not name.startswith("__init__"):
            found.append(PromiseFile(name, plugin_dir / name, plugin=True))
    legacy_dir = paths.etc("promise")
    for name in _listdir(legacy_dir):
        path = legacy_dir / name
        if path.is_file() and os.access(path, os.X_OK):
            found.append(PromiseFile(name, path, plugin=False))
        else:
            log.warning("Bad promise file at %s: not an executable file", path)
    return found


def _listdir(directory: Path) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
