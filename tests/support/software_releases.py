"""Software releases for `run_software` tests: examples/hello, a tiny profile, and the
master a software run talks to, as a small recorder of the five calls it makes (a test
double)."""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from slapgrid.node.config import NodeConfig
from slapgrid.node.safety import software_hash
from support.configs import node_config

HELLO = Path(__file__).resolve().parents[2] / "examples" / "hello" / "software.cfg"
TINY = """\
[buildout]
parts = hello
[hello]
recipe = zc.buildout:debug
greeting = hi
"""


@dataclass
class Release:
    url: str
    requested_state: str = "available"


class Master:
    """Records the SLAP calls of a software run (a test double for the master)."""

    def __init__(self, *releases: Release) -> None:
        self.releases = list(releases)
        self.calls: list[tuple[str, str]] = []
        self.errors: dict[str, str] = {}
        self._lock = threading.Lock()

    def computer(self) -> SimpleNamespace:
        return SimpleNamespace(software_releases=list(self.releases))

    def _record(self, call: str, url: str) -> None:
        with self._lock:
            self.calls.append((call, url))

    def building_software_release(self, url: str) -> None:
        self._record("building", url)

    def available_software_release(self, url: str) -> None:
        self._record("available", url)

    def destroyed_software_release(self, url: str) -> None:
        self._record("destroyed", url)

    def software_release_error(self, url: str, log: str) -> None:
        self._record("error", url)
        self.errors[url] = log


make_config = functools.partial(node_config, software_min_free_space=0, jobs=2)


COUNTED_HELLO = """\
[buildout]
extends = {hello}
parts += counter

[counter]
recipe = slapos.recipe.build
install =
  import os
  with open({counter!r}, "a") as f:
      f.write("built\\n")
  os.makedirs(options["location"])
"""


def counted_hello(counter: Path) -> str:
    """examples/hello plus a part appending a line to `counter` each time it is built:
    a release installed from a binary cache leaves the counter as it was."""
    return COUNTED_HELLO.format(hello=HELLO, counter=str(counter))


def profile(directory: Path, name: str, text: str) -> str:
    path = directory / name
    path.write_text(text)
    return str(path)


def software_dir(config: NodeConfig, url: str) -> Path:
    return config.software_root / software_hash(url)
