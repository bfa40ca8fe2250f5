"""`slapgrid format`: partition directories, users, addresses, and registration.

The computer description is planned by a pure function (`plan_format`) from the
configuration, the description saved by the previous run and facts about the host; thin
`Step` executors then compare each wanted state with the machine and change only what
differs, so a second run changes nothing.

Defaults differ from the reference where it is safer: the host network is never touched
unless `alter_network` is asked for (then `ip addr add`, `ip -6 route replace local
<range> dev lo` and, with `create_tap`, `ip tuntap add`); users and groups are only
created when running as root (`alter_user`); partition IPv4 addresses come from
127.1.0.0/16, usable without any set-up; IPv6 comes from `ipv6_prefix`, else (with
alter_network) the interface's global prefix, else a unique-local /64 derived from the
computer id. The description is saved as JSON (`computer_json`), not as XML.
"""

from __future__ import annotations

import grp
import json
import logging
import os
import platform
import pwd
import re
import shlex
import shutil
import socket
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
    ip_address,
    ip_interface,
)
from pathlib import Path
from typing import Any, ClassVar

import psutil

from slapgrid import __version__
from slapgrid.errors import ConfigError, SlapgridError
from slapgrid.node.addresses import (
    DEFAULT_IPV4_NETWORK,
    DEFAULT_PREFIX_SHIFT,
    check_prefix_shift,
    nth_host,
    parse_network,
    partition_range,
    tap_range,
    ula_network,
)
from slapgrid.node.config import parse_bool, parse_int, read_config_file, section
from slapgrid.node.files import atomic_write
from slapgrid.slap.client import SlapClient
from slapgrid.slap.errors import NotFoundError, SlapError
from slapgrid.slap.transport import normalise_master_url

log = logging.getLogger(__name__)

RESOURCE_FILE = ".slapos-resource"
PARTITION_MODE = 0o750
ROOT_MODE = 0o755
SHELL = "/bin/sh"
# where user and network tools live even when $PATH lacks the sbin directories
_TOOL_PATH = os.pathsep.join(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
_NAME = re.compile(r"^[a-z_][a-z0-9_-]*$")
_PARTITION_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_UNSUPPORTED = (
    "input_definition_file",
    "output_definition_file",
    "tap_gateway_interface",
    "bridge_name",
    "no_bridge",
)


class FormatError(SlapgridError):
    """Format cannot go on: a refused shrink, a failed system command, an unusable path."""


class RegistrationError(SlapgridError):
    """The machine is formatted but the master did not take its description (offline)."""

    exit_code = 2


# --- configuration ---------------------------------------------------------------------


@dataclass(frozen=True)
class FormatConfig:
    """`[slapformat]`, overridden by `[slapos]`, overridden by flags; `None` means automatic."""

    master_url: str
    computer_id: str
    instance_root: Path
    software_root: Path
    partition_amount: int
    computer_json: Path
    partition_base_name: str = "slappart"
    user_base_name: str = "slapuser"
    tap_base_name: str = "slaptap"
    software_user: str = "slapsoft"
    interface_name: str | None = None
    ipv6_interface: str | None = None
    ipv4_local_network: IPv4Network = DEFAULT_IPV4_NETWORK
    ipv6_prefix: IPv6Network | None = None  # None: the interface's (alter_network) or a ULA
    ipv6_prefixshift: int = DEFAULT_PREFIX_SHIFT
    partition_has_ipv6_range: bool = True
    alter_user: bool | None = None  # None: only when running as root
    alter_network: bool = False
    create_tap: bool | None = None  # None: as alter_network
    tap_ipv6: bool = True
    instance_storage_home: str | None = None
    key_file: Path | None = None
    cert_file: Path | None = None
    master_ca_file: Path | None = None


def _optional_bool(values: Mapping[str, Any], name: str) -> bool | None:
    value = values.get(name)
    return None if value in (None, "") else parse_bool(value, name)


def _path(value: Any) -> Path:
    return Path(str(value)).expanduser().absolute()


def load_format_config(
    path: Path | None, overrides: Mapping[str, Any] | None = None
) -> FormatConfig:
    """Merge the sections and flags (`None` flags are "not given"), then validate."""
    parser = read_config_file(path) if path is not None else None
    values: dict[str, Any] = {**section(parser, "slapformat"), **section(parser, "slapos")}
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})

    required = ("master_url", "computer_id", "instance_root", "software_root", "partition_amount")
    missing = [name for name in required if values.get(name) in (None, "")]
    if missing:
        flags = ", ".join("--" + name.replace("_", "-") for name in missing)
        raise ConfigError(f"missing mandatory option(s) for format: {', '.join(missing)} ({flags})")
    unsupported = [name for name in _UNSUPPORTED if values.get(name) not in (None, "")]
    if parse_bool(values.get("create_tun", False), "create_tun"):
        unsupported.append("create_tun")
    if unsupported:
        raise ConfigError(f"option(s) not supported by slapgrid format: {', '.join(unsupported)}")

    amount = parse_int(values["partition_amount"], "partition_amount")
    if amount < 0:
        raise ConfigError(f"option 'partition_amount' must not be negative, not {amount}")
    names = {
        name: str(values.get(name) or default).strip()
        for name, default in (
            ("partition_base_name", "slappart"),
            ("user_base_name", "slapuser"),
            ("tap_base_name", "slaptap"),
            ("software_user", "slapsoft"),
        )
    }
    for name, value in names.items():
        pattern = _PARTITION_NAME if name == "partition_base_name" else _NAME
        if not pattern.match(value):
            raise ConfigError(f"option '{name}': {value!r} is not a usable name")
    try:
        master_url = normalise_master_url(str(values["master_url"]).strip())
    except SlapError as exc:
        raise ConfigError(f"option 'master_url': {exc}") from None

    def optional_file(name: str) -> Path | None:
        value = values.get(name)
        if value in (None, ""):
            return None
        file = _path(value)
        if not file.is_file():
            raise ConfigError(f"option '{name}': file {file} does not exist")
        return file

    key_file, cert_file = optional_file("key_file"), optional_file("cert_file")
    if (key_file is None) != (cert_file is None):
        raise ConfigError("options 'key_file' and 'cert_file' must be given together")
    instance_root = _path(values["instance_root"])
    interface_name = str(values.get("interface_name") or "").strip() or None
    ipv4 = values.get("ipv4_local_network")
    ipv6 = values.get("ipv6_prefix")
    return FormatConfig(
        master_url=master_url,
        computer_id=str(values["computer_id"]).strip(),
        instance_root=instance_root,
        software_root=_path(values["software_root"]),
        partition_amount=amount,
        computer_json=(
            _path(values["computer_json"])
            if values.get("computer_json")
            else instance_root / ".slapgrid" / "computer.json"
        ),
        interface_name=interface_name,
        ipv6_interface=str(values.get("ipv6_interface") or "").strip() or interface_name,
        ipv4_local_network=(
            parse_network(str(ipv4), IPv4Network, "ipv4_local_network")
            if ipv4
            else DEFAULT_IPV4_NETWORK
        ),
        ipv6_prefix=parse_network(str(ipv6), IPv6Network, "ipv6_prefix") if ipv6 else None,
        ipv6_prefixshift=parse_int(
            values.get("ipv6_prefixshift", DEFAULT_PREFIX_SHIFT), "ipv6_prefixshift"
        ),
        partition_has_ipv6_range=parse_bool(
            values.get("partition_has_ipv6_range", True), "partition_has_ipv6_range"
        ),
        alter_user=_optional_bool(values, "alter_user"),
        alter_network=_optional_bool(values, "alter_network") or False,
        create_tap=_optional_bool(values, "create_tap"),
        tap_ipv6=parse_bool(values.get("tap_ipv6", True), "tap_ipv6"),
        instance_storage_home=str(values.get("instance_storage_home") or "") or None,
        key_file=key_file,
        cert_file=cert_file,
        master_ca_file=optional_file("master_ca_file"),
        **names,
    )


# --- facts about the host the planner needs ---------------------------------------------


@dataclass(frozen=True)
class Identity:
    """The account running format: the partition owner in rootless mode."""

    name: str
    uid: int
    gid: int
    shell: str = SHELL

    @property
    def is_root(self) -> bool:
        return self.uid == 0


@dataclass(frozen=True)
class Host:
    identity: Identity
    ipv6: IPv6Interface  # the computer's own address, within the partitions' IPv6 network
    os_type: str = ""
    python_version: str = ""


def current_identity() -> Identity:
    uid = os.geteuid()
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:  # an uid without a passwd entry, as in some containers
        return Identity(str(uid), uid, os.getegid())
    return Identity(entry.pw_name, uid, entry.pw_gid, entry.pw_shell or SHELL)


def os_type() -> str:
    """JSON of (platform, distribution id, version, name), as masters display it."""
    try:
        release = platform.freedesktop_os_release()
    except OSError:
        release = {}
    fields = [release.get(key, "") for key in ("ID", "VERSION_ID", "NAME")]
    return json.dumps([platform.platform(), *fields])


def _global_ipv6(interface: str) -> list[IPv6Interface]:
    found = []
    for entry in psutil.net_if_addrs().get(interface, []):
        if entry.family != socket.AF_INET6 or not entry.netmask:
            continue
        prefixlen = bin(int(IPv6Address(entry.netmask.split("/")[0]))).count("1")
        address = IPv6Interface((entry.address.split("%")[0], prefixlen))
        if not (address.is_link_local or address.is_loopback or address.is_multicast):
            found.append(address)
    return found


def resolve_ipv6(config: FormatConfig, previous: Mapping[str, Any] | None) -> IPv6Interface:
    """The computer's IPv6 and network: configured, else the interface's, else a ULA.

    The interface is only consulted with alter_network: without it addresses are merely
    assigned, and a stable private prefix is the safer choice.
    """
    if config.ipv6_prefix is not None:
        return IPv6Interface((config.ipv6_prefix[1], config.ipv6_prefix.prefixlen))
    if not (config.alter_network and config.ipv6_interface):
        network = ula_network(config.computer_id)
        return IPv6Interface((network[1], network.prefixlen))
    candidates = _global_ipv6(config.ipv6_interface)
    if not candidates:
        raise ConfigError(
            f"interface {config.ipv6_interface!r} has no global IPv6 address: "
            "set ipv6_prefix or ipv6_interface"
        )
    stored = (previous or {}).get("address")
    try:
        preferred = ip_address(stored) if stored else None
    except ValueError:
        preferred = None
    containing = [a for a in candidates if preferred is not None and preferred in a.network]
    if containing:
        return min(containing, key=lambda a: a.ip)
    return min(candidates, key=lambda a: (a.network.prefixlen, a.ip))


# --- steps: a wanted state each, checked against the machine ------------------------------


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


# --- the plan ----------------------------------------------------------------------------


@dataclass
class FormatPlan:
    definition: dict[str, Any]  # what computer_json holds and the master receives
    steps: list[Step]
    notes: list[str] = field(default_factory=list)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, indent=2) + "\n"


def _stored_address(
    entry: Mapping[str, Any], network: IPv4Network | IPv6Network, taken: set[Any]
) -> IPv4Address | IPv6Address | None:
    """The partition's stored address inside `network`, unless another partition has it."""
    for item in entry.get("address_list") or []:
        try:
            address = ip_address(str(item.get("addr")))
        except (AttributeError, ValueError):
            continue
        if address in network and address not in taken:
            taken.add(address)
            return address
    return None


def _shrink_message(amount: int, stored: Sequence[Mapping[str, Any]], busy: Mapping) -> str:
    vanishing = []
    for entry in stored[amount:]:
        reference = entry["reference"]
        contents = busy.get(reference)
        state = f"in use: {', '.join(contents[:3])}" if contents else "free"
        vanishing.append(f"{reference} ({state})")
    return (
        f"partition_amount {amount} is lower than the {len(stored)} partitions already "
        f"configured, and format never removes partitions: {', '.join(vanishing)} "
        "would disappear"
    )


def _tap(config: FormatConfig, network: IPv6Network, index: int, describe: bool) -> dict:
    tap = {
        key: ""
        for family in ("ipv4", "ipv6")
        for key in (f"{family}_addr", f"{family}_netmask", f"{family}_gateway", f"{family}_network")
    }
    tap["name"] = f"{config.tap_base_name}{index}"
    if describe and config.tap_ipv6:
        subrange = tap_range(network, index, config.ipv6_prefixshift)
        gateway = subrange[1]
        tap.update(
            ipv6_addr=str(subrange.broadcast_address),
            ipv6_netmask=str(subrange.netmask),
            ipv6_gateway=str(gateway),
            ipv6_network=f"{gateway}/{subrange.prefixlen}",
        )
    return tap


def plan_format(
    config: FormatConfig,
    previous: Mapping[str, Any] | None,
    host: Host,
    *,
    busy: Mapping[str, Sequence[str]] | None = None,
) -> FormatPlan:
    """The computer description and the steps reaching it; touches nothing.

    Stored partitions keep their reference and their addresses while these stay inside
    the configured networks; new partition i gets host i + 2 of each network. `busy` maps
    a stored partition to what its directory holds, to explain a refused shrink.
    """
    identity = host.identity
    alter_user = identity.is_root if config.alter_user is None else config.alter_user
    for wanted, option in ((alter_user, "alter_user"), (config.alter_network, "alter_network")):
        if wanted and not identity.is_root:
            flag = option.replace("_", "-")
            raise FormatError(f"{option} needs root: run as root, or without --{flag}")
    create_tap = config.alter_network if config.create_tap is None else config.create_tap
    stored = list((previous or {}).get("partition_list") or [])
    amount = config.partition_amount
    if amount < len(stored):
        raise FormatError(_shrink_message(amount, stored, busy or {}))

    v4, v6, shift = config.ipv4_local_network, host.ipv6.network, config.ipv6_prefixshift
    if config.partition_has_ipv6_range or (create_tap and config.tap_ipv6):
        check_prefix_shift(v6, shift, amount)
    taken: set[Any] = {host.ipv6.ip}
    kept = [(_stored_address(e, v4, taken), _stored_address(e, v6, taken)) for e in stored]
    notes = []
    if not alter_user:
        notes.append(
            f"rootless mode: partitions belong to {identity.name}; no user or group is created"
        )
    if amount > len(stored):
        notes.append(f"adding {amount - len(stored)} partition(s)")
    software_user = config.software_user if alter_user else identity.name

    steps: list[Step] = []
    if alter_user:
        steps += [
            EnsureGroup(software_user),
            EnsureUser(software_user, config.software_root, software_user),
        ]
    steps += [
        EnsureDirectory(config.software_root, ROOT_MODE, software_user if alter_user else None),
        EnsureDirectory(config.instance_root, ROOT_MODE),
    ]
    if config.alter_network:
        steps.append(EnsureAddress(config.ipv6_interface or "lo", str(host.ipv6)))

    partitions = []
    for index in range(amount):
        entry = stored[index] if index < len(stored) else {}
        reference = entry.get("reference") or f"{config.partition_base_name}{index}"
        path = config.instance_root / reference
        kept4, kept6 = kept[index] if index < len(kept) else (None, None)
        address4 = kept4 or nth_host(v4, index, taken)
        address6 = kept6 or nth_host(v6, index, taken)
        taken.update((address4, address6))
        for old, new, network in ((kept4, address4, v4), (kept6, address6, v6)):
            if entry and old is None:
                notes.append(f"{reference}: stored address not in {network}, now {new}")
        user_name = f"{config.user_base_name}{index}" if alter_user else identity.name
        ipv6_range: dict[str, Any] = {}
        if config.partition_has_ipv6_range:
            subrange = partition_range(v6, index, shift)
            ipv6_range = {
                "addr": str(subrange.network_address),
                "netmask": str(subrange.netmask),
                "network": str(subrange),
                "prefixlen": subrange.prefixlen,
            }
        partition = {
            "reference": reference,
            "path": str(path),
            "user": {
                "name": user_name,
                "shell": SHELL if alter_user else identity.shell,
                "path": str(path),
                "additional_group_list": [software_user] if alter_user else [],
            },
            "address_list": [
                {"addr": str(address4), "netmask": "255.255.255.255"},
                {"addr": str(address6), "netmask": str(v6.netmask)},
            ],
            "ipv6_range": ipv6_range,
            "tap": _tap(config, v6, index, create_tap),
            "tun": None,
            "external_storage_list": [],
        }
        partitions.append(partition)
        if alter_user:
            steps += [
                EnsureGroup(user_name),
                EnsureUser(user_name, path, user_name, (software_user,)),
            ]
        steps += [
            EnsureDirectory(path, PARTITION_MODE, user_name if alter_user else None),
            EnsureFile(path / RESOURCE_FILE, _json(partition)),
        ]
        if config.alter_network:
            steps += _network_steps(config, partition, address4, address6, v6, create_tap)

    definition = {
        "reference": config.computer_id,
        "address": str(host.ipv6.ip),
        "netmask": str(v6.netmask),
        "instance_root": str(config.instance_root),
        "software_root": str(config.software_root),
        "instance_storage_home": config.instance_storage_home,
        "software_user": software_user,
        "ipv6_interface": config.ipv6_interface,
        "partition_has_ipv6_range": config.partition_has_ipv6_range,
        "tap_gateway_interface": "",
        "tap_ipv6": config.tap_ipv6,
        "interface": {
            "name": config.interface_name,
            "ipv4_local_network": str(v4),
            "ipv6_interface": config.ipv6_interface,
            "ipv6_prefixshift": shift,
        },
        "public_ipv4_address": None,
        "os_type": host.os_type,
        "python_version": host.python_version,
        "slapos_version": f"slapgrid {__version__}",
        "partition_list": partitions,
    }
    steps.append(EnsureFile(config.computer_json, _json(definition)))
    return FormatPlan(definition, steps, notes)


def _network_steps(
    config: FormatConfig,
    partition: Mapping[str, Any],
    address4: Any,
    address6: Any,
    network: IPv6Network,
    create_tap: bool,
) -> list[Step]:
    """Host network changes for one partition (only planned with alter_network)."""
    steps: list[Step] = []
    if not address4.is_loopback:  # all of 127/8 is already local
        steps.append(EnsureAddress(config.interface_name or "lo", f"{address4}/32"))
    steps.append(EnsureAddress(config.ipv6_interface or "lo", f"{address6}/{network.prefixlen}"))
    if partition["ipv6_range"]:
        steps.append(EnsureRoute(partition["ipv6_range"]["network"], "lo", local=True))
    tap = partition["tap"]
    if create_tap:
        steps.append(EnsureTap(tap["name"], partition["user"]["name"]))
        if tap["ipv6_addr"]:
            prefixlen = tap["ipv6_network"].rsplit("/", 1)[1]
            steps += [
                EnsureAddress(tap["name"], f"{tap['ipv6_addr']}/{prefixlen}"),
                EnsureRoute(tap["ipv6_gateway"], tap["name"]),
                EnsureRoute(tap["ipv6_network"], tap["name"], via=tap["ipv6_gateway"]),
            ]
    return steps


# --- running it --------------------------------------------------------------------------


def load_previous(path: Path) -> dict[str, Any] | None:
    """The description the last run saved, checked enough to never lose a partition."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"cannot read the saved computer description {path}: {exc}") from None
    partitions = document.get("partition_list") if isinstance(document, dict) else None
    references = [p.get("reference") for p in partitions or [] if isinstance(p, dict)]
    if (
        not isinstance(partitions, list)
        or len(references) != len(partitions)
        or not all(isinstance(r, str) and _PARTITION_NAME.match(r) for r in references)
        or len(set(references)) != len(references)
    ):
        raise FormatError(f"the saved computer description {path} has an invalid partition_list")
    return document


def partition_usage(path: Path) -> list[str]:
    """What a partition directory holds besides its resource file: empty means free."""
    try:
        return sorted(name for name in os.listdir(path) if name != RESOURCE_FILE)
    except (FileNotFoundError, NotADirectoryError):
        return []


def check_partition(path: Path, expected_owner_uid: int | None) -> list[str]:
    """What is wrong with a partition directory, in words; empty when it is usable."""
    try:
        status = path.stat()
    except FileNotFoundError:
        return [f"partition directory {path} does not exist (run `slapgrid format`)"]
    except OSError as exc:
        return [f"cannot inspect partition directory {path}: {exc.strerror}"]
    if not stat.S_ISDIR(status.st_mode):
        return [f"{path} is not a directory"]
    problems = []
    if expected_owner_uid is not None and status.st_uid != expected_owner_uid:
        problems.append(
            f"{path} belongs to {_user_label(status.st_uid)}, "
            f"expected {_user_label(expected_owner_uid)}"
        )
    mode = stat.S_IMODE(status.st_mode)
    if mode != PARTITION_MODE:
        problems.append(f"{path} has mode {mode:04o}, expected {PARTITION_MODE:04o}")
    return problems


def _user_label(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def missing_tools(steps: Sequence[Step]) -> list[str]:
    needed = sorted({tool for step in steps for tool in step.tools})
    return [tool for tool in needed if _tool(tool) is None]


def execute(steps: Sequence[Step], *, dry_run: bool = False) -> list[str]:
    """Apply every step in order; returns the changes made (or that would be made)."""
    changes = []
    for step in steps:
        try:
            done = step.apply(dry_run)
        except OSError as exc:
            raise FormatError(f"{exc.filename or step}: {exc.strerror or exc}") from None
        for change in done:
            if not dry_run:
                log.info("format: %s", change)
        changes += done
    return changes


def render_plan(plan: FormatPlan, changes: Sequence[str]) -> str:
    definition = plan.definition
    lines = [
        f"computer {definition['reference']}: {len(definition['partition_list'])} partition(s), "
        f"address {definition['address']}"
    ]
    for partition in definition["partition_list"]:
        addresses = " ".join(a["addr"] for a in partition["address_list"])
        ipv6_range = partition["ipv6_range"].get("network", "-")
        lines.append(
            f"  {partition['reference']}: user {partition['user']['name']}, {addresses}, "
            f"range {ipv6_range}"
        )
    lines += [f"note: {note}" for note in plan.notes]
    lines += [f"would {change}" for change in changes] or ["nothing to change"]
    return "\n".join(lines)


def register(config: FormatConfig, definition: Mapping[str, Any]) -> None:
    prefix = "could not register with the master"
    try:
        with SlapClient(
            config.master_url,
            config.computer_id,
            key_file=config.key_file,
            cert_file=config.cert_file,
            ca_file=config.master_ca_file,
        ) as client:
            client.load_computer_configuration(definition)
    except NotFoundError as exc:
        raise RegistrationError(
            f"{prefix}: it does not know computer {config.computer_id} ({exc})"
        ) from None
    except SlapError as exc:
        raise RegistrationError(f"{prefix}: {exc}") from None


def run_format(
    config_path: Path | None, overrides: Mapping[str, Any], *, dry_run: bool = False
) -> int:
    """`slapgrid format`: plan, apply what differs, register; 0, or raise a SlapgridError.

    A master failure raises `RegistrationError` (exit 2) after the machine is formatted.
    """
    config = load_format_config(config_path, overrides)
    previous = load_previous(config.computer_json)
    host = Host(
        current_identity(),
        resolve_ipv6(config, previous),
        os_type=os_type(),
        python_version=platform.python_version(),
    )
    stored = (previous or {}).get("partition_list") or []
    busy = {
        entry["reference"]: partition_usage(config.instance_root / entry["reference"])
        for entry in stored[config.partition_amount :]
    }
    plan = plan_format(config, previous, host, busy=busy)
    if dry_run:
        print(render_plan(plan, execute(plan.steps, dry_run=True)))
        return 0
    for note in plan.notes:
        log.info("format: %s", note)
    missing = missing_tools(plan.steps)
    if missing:
        raise FormatError(f"missing system command(s): {', '.join(missing)}")
    if not execute(plan.steps):
        log.info("format: nothing to change")
    register(config, plan.definition)
    count = len(plan.definition["partition_list"])
    log.info("format: registered %d partition(s) with %s", count, config.master_url)
    return 0
