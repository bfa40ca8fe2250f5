"""Who a child runs as: the owner of the directory it works on.

Every child the agent starts (bootstraps, buildouts, promises, supervisord programs, report
scripts) runs as the owner of its directory when the agent is root; otherwise it cannot switch
and runs as the agent, which keeps rootless nodes working. The owner's account gives HOME,
USER and the supplementary groups. `euid` is a parameter so root-only paths are testable
without root.
"""

from __future__ import annotations

import enum
import os
import pwd
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from slapgrid.errors import SlapgridError

SHELL = "/bin/sh"
"""The login shell of an account that names none."""


class IdentityError(SlapgridError):
    """A child would have to run with root's group on behalf of another user."""


class RootGroup(enum.Enum):
    """What a root agent does with a directory owned by a user but by group 0 (root).

    A directory owned by root itself is the agent's own: its children run as the agent under
    either policy (a root-owned partition runs its promises as the agent, like the reference).
    """

    REFUSE = "refuse"
    """Builds and scripts: never hand root's group to a child (its files would be root's)."""
    ALLOW = "allow"
    """Promises: checked as the owner, group included, as the reference does."""


@dataclass(frozen=True)
class Identity:
    """An account: who format runs as, whose name, home and groups a child gets."""

    name: str
    uid: int
    gid: int
    shell: str = SHELL
    home: str = ""
    known: bool = True  # it has a passwd entry (else `name` is the bare uid)

    @property
    def is_root(self) -> bool:
        return self.uid == 0

    @cached_property
    def groups(self) -> tuple[int, ...]:
        """Supplementary groups, looked up on first use: most checks never start a child."""
        return tuple(os.getgrouplist(self.name, self.gid)) if self.known else (self.gid,)


def account(uid: int, gid: int | None = None, *, home: Path | str = "") -> Identity:
    """The passwd account of `uid` (`gid` overrides its primary group); `home` stands in for
    the home directory of an uid without an entry, as in some containers."""
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return Identity(str(uid), uid, uid if gid is None else gid, home=str(home), known=False)
    return Identity(
        entry.pw_name,
        uid,
        entry.pw_gid if gid is None else gid,
        entry.pw_shell or SHELL,
        entry.pw_dir,
    )


@dataclass(frozen=True)
class RunAs:
    """The owner of a directory, and whether a child switches to it (only a root agent can)."""

    owner: Identity
    switch: bool = False

    def popen_options(self) -> dict[str, Any]:
        """`subprocess.Popen` keywords: thread-safe, unlike a `preexec_fn`."""
        if not self.switch:
            return {}
        owner = self.owner
        return {"user": owner.uid, "group": owner.gid, "extra_groups": list(owner.groups)}

    @property
    def file_owner(self) -> tuple[int, int] | None:
        """(uid, gid) to give files the child reads as its own; None: they stay the agent's."""
        return (self.owner.uid, self.owner.gid) if self.switch else None


def run_as(
    directory: Path,
    policy: RootGroup = RootGroup.REFUSE,
    *,
    uid: int | None = None,
    gid: int | None = None,
    euid: int | None = None,
) -> RunAs:
    """Who a child working on `directory` runs as; `uid`/`gid` override its owner."""
    if uid is None or gid is None:
        info = directory.stat()
        uid = info.st_uid if uid is None else uid
        gid = info.st_gid if gid is None else gid
    euid = os.geteuid() if euid is None else euid
    owner = account(uid, gid, home=directory)
    if euid != 0 or uid == euid:
        return RunAs(owner)
    if gid == 0 and policy is RootGroup.REFUSE:
        raise IdentityError(
            f"refusing to run a child as group 0 (root) for {directory}: "
            "give the directory to the partition or software user"
        )
    return RunAs(owner, switch=True)


def home_of(directory: Path) -> Path:
    """Home of the owner of `directory` (bootstraps and scripts run with it); the directory
    itself when the owner has no passwd entry."""
    return Path(account(directory.stat().st_uid, home=directory).home)


def agent_identity(euid: int | None = None) -> Identity:
    """The account the agent runs as (format's partition owner in rootless mode)."""
    euid = os.geteuid() if euid is None else euid
    found = account(euid)
    return found if found.known else Identity(str(euid), euid, os.getegid(), known=False)
