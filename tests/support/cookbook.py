"""The cookbook Software Release (tests/software/cookbook): its profile with a cache that
outlives the session, its build, and a node of the embedded master deploying it.

The release installs some forty eggs from PyPI (slapos.cookbook, slapos.core and their
dependencies): about a minute and a half the first time on a machine. Its builds keep
those eggs in `~/.cache/slapgrid-tests/cookbook/<user>/` (`$XDG_CACHE_HOME` is honoured),
so the next session links them instead of installing them again. Each account gets its own
directory: the reference agent, run as root, builds as another account.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from nodes import COMPUTER, format_partitions
from slapgrid.node.config import NodeConfig
from slapgrid.node.instance.run import run_instance
from slapgrid.node.safety import software_hash
from slapgrid.node.software.run import run_software
from slapgrid.node.supervisor.control import Supervisor
from slapgrid.slap.client import SlapClient
from support.configs import node_config
from support.software_releases import Master, Release, make_config
from support.tls import TlsMaster, tls_master

SOURCE = Path(__file__).resolve().parents[1] / "software" / "cookbook" / "software.cfg"
BUILD_TIMEOUT = 1200  # s: a cold build on a slow machine, from PyPI


def cache_root() -> Path:
    """`~/.cache/slapgrid-tests/cookbook`: what a next session on this machine reuses."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "slapgrid-tests" / "cookbook"


def cache_for(user: pwd.struct_passwd) -> Path:
    """The cache directory of the account that builds (made, and owned by it).

    As root, for another account, the directories above it are made traversable.
    """
    path = cache_root() / user.pw_name
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0 and user.pw_uid != 0:
        os.chown(path, user.pw_uid, user.pw_gid)
        for above in (path.parent, path.parent.parent):
            above.chmod(above.stat().st_mode | 0o055)
    return path


def cached_profile(directory: Path, cache: Path) -> str:
    """A profile extending the cookbook SR with the cache: the URL tests supply.

    Only the eggs are shared: buildout's `download-cache` would also keep the SR's own
    templates, by URL, and serve a stale copy of an edited one to the next session.
    """
    profile = directory / "software.cfg"
    profile.write_text(f"[buildout]\nextends = {SOURCE}\neggs-directory = {cache / 'eggs'}\n")
    return str(profile)


@contextlib.contextmanager
def cache_lock(cache: Path) -> Iterator[None]:
    """One build at a time in a cache directory, across sessions on this machine."""
    with FileLock(cache.parent / f".{cache.name}.lock", timeout=BUILD_TIMEOUT):
        yield


@dataclass
class Built:
    """A software root holding the cookbook SR, and how its build went."""

    software_root: Path
    url: str
    status: int
    seconds: float

    @property
    def directory(self) -> Path:
        return self.software_root / software_hash(self.url)


def build(root: Path, config: NodeConfig | None = None) -> Built:
    """The cookbook SR built by `run_software` in `root/software`, its cache shared."""
    cache = cache_for(pwd.getpwuid(os.geteuid()))
    url = cached_profile(root, cache)
    config = config or make_config(root)
    started = time.monotonic()
    with cache_lock(cache):
        status = run_software(config, Master(Release(url))).status
    return Built(config.software_root, url, int(status), time.monotonic() - started)


class CookbookNode:
    """A formatted node of the embedded master over HTTPS, with the cookbook SR built and
    supplied: the agent has the computer's certificate and checks the master against its
    CA; it writes each partition's certificate, with which the recipes request and publish;
    requests are a user's."""

    def __init__(self, root: Path, master: TlsMaster, built: Built) -> None:
        self.root, self.master, self.store, self.url = root, master, master.store, built.url
        repository = root / "certificates"
        repository.mkdir(exist_ok=True)
        self.config = node_config(
            root,
            master_url=master.url,
            computer_id=COMPUTER,
            software_root=built.software_root,
            software_min_free_space=0,
            instance_min_free_space=0,
            promise_timeout=20,
            key_file=master.computer.key_file,
            cert_file=master.computer.cert_file,
            master_ca_file=master.computer.ca_file,
            certificate_repository_path=repository,
        )
        self.client = SlapClient.from_config(self.config)
        self.user = master.user_client()
        self.supervisor = Supervisor(self.config.instance_root)

    def request(self, title: str, state: str = "started", **parameters: Any):
        return self.user.request(self.url, title, parameters=parameters, state=state)

    def instance(self, **kwargs: Any) -> int:
        return int(run_instance(self.config, self.client, **kwargs).status)

    def partition(self, title: str) -> Path:
        """The directory of the partition hosting the instance `title`."""
        for partition in self.client.computer().partitions:
            if partition.instance_title == title:
                return self.config.instance_root / partition.partition_id
        raise AssertionError(f"no partition hosts {title}")

    def status_text(self, partition: Path) -> str:
        return self.store.partition_status(COMPUTER, partition.name)["text"]

    def close(self) -> None:
        self.client.close()
        self.user.close()


@contextlib.contextmanager
def cookbook_node(root: Path, built: Built, partitions: int = 3) -> Iterator[CookbookNode]:
    """Master up (HTTPS), `partitions` formatted, the cookbook SR supplied (found built)."""
    with tls_master(root, COMPUTER) as master:
        format_partitions(
            master.url,
            root,
            partitions,
            software_root=built.software_root,
            credentials=master.computer,
        )
        node = CookbookNode(root, master, built)
        node.user.supply(built.url)
        assert run_software(node.config, node.client).status == 0
        try:
            yield node
        finally:
            node.supervisor.shutdown()
            node.close()
