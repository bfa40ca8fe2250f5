"""The steps of `slapgrid format`: one wanted state each, checked against the machine.

`plan_format` decides which steps a computer needs; each step here only compares its wanted
state (a group, a user, a directory, a file, an address, a route, a tap) with what exists
and changes what differs, so applying the same steps twice changes nothing the second time.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import shlex
import shutil
import socket
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_interface
from pathlib import Path
from typing import ClassVar

import psutil

from slapgrid.errors import SlapgridError
from slapgrid.node.files import atomic_write

log = logging.getLogger(__name__)

SHELL = "/bin/sh"
# where user and network tools live even when $PATH lacks the sbin directories
_TOOL_PATH = os.pathsep.join(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])


class FormatError(SlapgridError):
    """Format cannot go on: a refused shrink, a failed system command, an unusable path."""


def _tool(name: str) -> str | None:
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), _TOOL_PATH]))


def _run(argv: Sequence[str]) -> str:
    executable = _tool(argv[0])
    if executable is None:
        raise FormatError(f"{argv[0]} is not installed")
    done = subprocess.run([executable, *argv[1:]], capture_output=True, text=True, check=False)
    if done.returncode:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise FormatError(
            f"`{shlex.join(argv)}` failed (exit {done.returncode})"
            + (f": {detail[-1]}" if detail else "")
        )
    return done.stdout


def _ids(user: str) -> tuple[int, int] | None:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


class Step:
    """One wanted state. `apply` returns what it changed (or would change, in a dry run)."""

    tools: ClassVar[tuple[str, ...]] = ()

    def apply(self, dry_run: bool) -> list[str]:
        raise NotImplementedError


@dataclass(frozen=True)
class EnsureGroup(Step):
    name: str
    tools: ClassVar[tuple[str, ...]] = ("groupadd",)

    def apply(self, dry_run: bool) -> list[str]:
        try:
            grp.getgrnam(self.name)
            return []
        except KeyError:
            pass
        if not dry_run:
            _run(["groupadd", "-r", self.name])
        return [f"create group {self.name}"]


@dataclass(frozen=True)
class EnsureUser(Step):
    """A locked system account with its own group, as the reference creates them."""

    name: str
    home: Path
    group: str
    extra_groups: tuple[str, ...] = ()
    shell: str = SHELL
    tools: ClassVar[tuple[str, ...]] = ("useradd", "usermod")

    def _differences(self, entry: pwd.struct_passwd) -> list[str]:
        differences = []
        if entry.pw_dir != str(self.home):
            differences.append(f"home {entry.pw_dir} → {self.home}")
        try:
            if entry.pw_gid != grp.getgrnam(self.group).gr_gid:
                differences.append(f"primary group → {self.group}")
        except KeyError:
            differences.append(f"primary group → {self.group}")
        if entry.pw_shell != self.shell:
            differences.append(f"shell {entry.pw_shell} → {self.shell}")
        for extra in self.extra_groups:
            try:
                members = grp.getgrnam(extra).gr_mem
            except KeyError:
                members = []
            if self.name not in members:
                differences.append(f"add to group {extra}")
        return differences

    def apply(self, dry_run: bool) -> list[str]:
        common = ["-d", str(self.home), "-g", self.group, "-s", self.shell]
        try:
            entry = pwd.getpwnam(self.name)
        except KeyError:
            if not dry_run:
                extra = ["-G", ",".join(self.extra_groups)] if self.extra_groups else []
                _run(["useradd", "-r", "-M", *common, *extra, self.name])
            return [f"create user {self.name} (home {self.home})"]
        differences = self._differences(entry)
        if differences and not dry_run:
            extra = ["-a", "-G", ",".join(self.extra_groups)] if self.extra_groups else []
            _run(["usermod", *common, *extra, self.name])
        return [f"modify user {self.name}: {', '.join(differences)}"] if differences else []


@dataclass(frozen=True)
class EnsureDirectory(Step):
    """A directory with an exact mode, and an owner (user and its group) when given."""

    path: Path
    mode: int
    owner: str | None = None

    def apply(self, dry_run: bool) -> list[str]:
        changes = []
        try:
            status: os.stat_result | None = self.path.stat()
        except FileNotFoundError:
            status = None
        if status is not None and not stat.S_ISDIR(status.st_mode):
            raise FormatError(f"{self.path} exists and is not a directory")
        if status is None:
            changes.append(f"create directory {self.path} ({self.mode:04o})")
            if not dry_run:
                self.path.mkdir(parents=True)
                self.path.chmod(self.mode)
        elif stat.S_IMODE(status.st_mode) != self.mode:
            old = stat.S_IMODE(status.st_mode)
            changes.append(f"chmod {self.path} {old:04o} → {self.mode:04o}")
            if not dry_run:
                self.path.chmod(self.mode)
        if self.owner is not None:
            ids = _ids(self.owner)
            if ids is None or status is None or (status.st_uid, status.st_gid) != ids:
                changes.append(f"chown {self.path} to {self.owner}")
                if not dry_run:
                    if ids is None:
                        raise FormatError(f"user {self.owner} does not exist")
                    os.chown(self.path, *ids)
        return changes


@dataclass(frozen=True)
class EnsureFile(Step):
    """A file with exact content and mode, replaced atomically and only when it differs."""

    path: Path
    content: str
    mode: int = 0o644

    def apply(self, dry_run: bool) -> list[str]:
        try:
            current: str | None = self.path.read_text(encoding="utf-8")
            mode = stat.S_IMODE(self.path.stat().st_mode)
        except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
            current, mode = None, None
        if current == self.content and mode == self.mode:
            return []
        if current == self.content:
            if not dry_run:
                self.path.chmod(self.mode)
            return [f"chmod {self.path} {mode:04o} → {self.mode:04o}"]
        if not dry_run:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, self.content, self.mode)
        return [f"{'write' if current is None else 'update'} {self.path}"]


def _device_addresses(device: str) -> set[IPv4Address | IPv6Address]:
    return {
        ip_address(entry.address.split("%")[0])
        for entry in psutil.net_if_addrs().get(device, [])
        if entry.family in (socket.AF_INET, socket.AF_INET6)
    }


@dataclass(frozen=True)
class EnsureAddress(Step):
    device: str
    address: str  # addr/prefixlen
    tools: ClassVar[tuple[str, ...]] = ("ip",)

    def apply(self, dry_run: bool) -> list[str]:
        if ip_interface(self.address).ip in _device_addresses(self.device):
            return []
        if not dry_run:
            _run(["ip", "addr", "add", self.address, "dev", self.device])
        return [f"add address {self.address} on {self.device}"]


@dataclass(frozen=True)
class EnsureRoute(Step):
    """An IPv6 route; `local` routes make a whole range bindable on this host."""

    destination: str
    device: str
    via: str | None = None
    local: bool = False
    tools: ClassVar[tuple[str, ...]] = ("ip",)

    def apply(self, dry_run: bool) -> list[str]:
        table = ["table", "local"] if self.local else []
        shown = _run(["ip", "-6", "route", "show", *table, self.destination])
        if f"dev {self.device}" in shown and (self.via is None or f"via {self.via}" in shown):
            return []
        route = [*(["local"] if self.local else []), self.destination, "dev", self.device]
        route += ["via", self.via] if self.via else []
        if not dry_run:
            _run(["ip", "-6", "route", "replace", *route])
        return [f"route {' '.join(route)}"]


@dataclass(frozen=True)
class EnsureTap(Step):
    name: str
    owner: str
    tools: ClassVar[tuple[str, ...]] = ("ip",)

    def apply(self, dry_run: bool) -> list[str]:
        device = Path("/sys/class/net") / self.name
        if device.exists():
            owner_file = device / "owner"
            ids = _ids(self.owner)
            if owner_file.exists() and ids and owner_file.read_text().strip() != str(ids[0]):
                log.warning(
                    "tap %s belongs to another user than %s: left as is", self.name, self.owner
                )
            return []
        if not dry_run:
            _run(["ip", "tuntap", "add", "dev", self.name, "mode", "tap", "user", self.owner])
            _run(["ip", "link", "set", self.name, "up"])
        return [f"create tap {self.name} for {self.owner}"]


def missing_tools(steps: Sequence[Step]) -> list[str]:
    needed = sorted({tool for step in steps for tool in step.tools})
    return [tool for tool in needed if _tool(tool) is None]
