"""What a slapos.cfg asks for that slapgrid does not do: one warning line each, once.

A node moved from the reference keeps its slapos.cfg. Nothing in it may be ignored
silently: a feature slapgrid lacks (managers, firewall), an option only the
reference reads, and a typo all get one line in the log when the configuration is first
read. The daemon reloads its configuration on SIGHUP: a line already logged by this
process is not logged again.
"""

from __future__ import annotations

import configparser
import dataclasses
import difflib
import logging
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("slapgrid.config")

_NOT_READ_BY_NODES = (
    "not read by slapgrid, nor by slapos.core's node: a release's buildout downloads from the"
    " cache its own profile names"
)
_UNREAD_NETWORKCACHE_KEYS = ("download-cache-url", "download-dir-url")

# [slapos] options slapos.core 1.26.1 reads and slapgrid ignores on purpose, by reason
REFERENCE_ONLY: dict[str, tuple[str, ...]] = {
    "runs take flock locks under the roots' .slapgrid directories, never pid files": (
        "pidfile",
        "pidfile_software",
        "pidfile_instance",
        "pidfile_report",
    ),
    "supervisord's configuration and socket are always under instance_root": (
        "supervisord_socket",
        "supervisord_configuration_path",
    ),
    _NOT_READ_BY_NODES: _UNREAD_NETWORKCACHE_KEYS,
    "slapgrid has no instance managers": ("power_user_list",),
    "slapgrid keeps no usage history (slapos collect); `slapgrid report` measures usage": (
        "collect_cache",
    ),
    "a command-line flag in slapgrid (--only-sr, --only-cp, --force), not a file option": (
        "develop",
        "force",
        "only-sr",
        "only_sr",
        "only-cp",
        "only_cp",
        "now",
    ),
    "slapgrid never stops started partitions on its own (see --force-stop)": ("force_stop",),
    "a format option slapgrid format does not use (it writes computer_json)": (
        "log_file",
        "input_definition_file",
        "output_definition_file",
        "tap_gateway_interface",
        "create_tun",
        "tun_ipv6",
        "bridge_name",
        "no_bridge",
        "dry_run",
    ),
}
_REFERENCE_KEYS = {key: reason for reason, keys in REFERENCE_ONLY.items() for key in keys}


def used_keys() -> frozenset[str]:
    """Every [slapos] option some slapgrid command reads: the agent's and format's.

    Taken from the dataclasses, so that a new option is known once it is a field of
    `NodeConfig` (or `FormatConfig`); one read from `NodeConfig.extra` must be added here
    (the binary cache's keys).
    """
    from slapgrid.node.config import SPELLINGS, NodeConfig
    from slapgrid.node.format.config import FormatConfig
    from slapgrid.node.software.cache.decisions import KEYS as CACHE_KEYS

    names = {field.name for field in dataclasses.fields(NodeConfig)} - {"source", "extra"}
    names |= {field.name for field in dataclasses.fields(FormatConfig)}
    names |= {spelling for spellings in SPELLINGS.values() for spelling in spellings}
    return frozenset(names | {"partition_amount"} | set(CACHE_KEYS))


def _own_keys(parser: configparser.ConfigParser, name: str) -> list[str]:
    """The section's keys without those [DEFAULT] lends to every section."""
    defaults = set(parser.defaults())
    return [key for key in parser.options(name) if key not in defaults]


def review(parser: configparser.ConfigParser, path: Path) -> list[str]:
    """One line for each thing in the file slapgrid will not do (pure: nothing is logged)."""
    lines = []
    slapos = _own_keys(parser, "slapos") if parser.has_section("slapos") else []
    managers = [f"[{name}]" for name in parser.sections() if name.startswith("manager")]
    if "manager_list" in slapos:
        managers.insert(0, "[slapos] manager_list")
    if managers:
        lines.append(
            f"{', '.join(managers)} in {path}: ignored: slapgrid has no instance managers "
            "(cpuset, devperm, portredir, prerm, whitelistfirewall)"
        )
    if parser.has_section("firewall"):
        lines.append(
            f"[firewall] in {path}: ignored: slapgrid sets no firewall rules for partitions"
        )
    if parser.has_section("collect"):  # in the reference's own slapos.cfg.example
        lines.append(
            f"[collect] in {path}: ignored: slapgrid keeps no usage history (slapos collect);"
            " `slapgrid report` measures and sends usage"
        )
    if parser.has_section("networkcache"):
        keys = _own_keys(parser, "networkcache")
        if unread := [key for key in keys if key in _UNREAD_NETWORKCACHE_KEYS]:
            lines.append(f"[networkcache] {', '.join(unread)} in {path}: {_NOT_READ_BY_NODES}")
        if unknown := [key for key in keys if key not in used_keys() | _REFERENCE_KEYS.keys()]:
            lines.append(f"[networkcache] {', '.join(unknown)} in {path}: unknown, ignored")
    used = used_keys()
    ignored: dict[str, list[str]] = {}
    for key in slapos:
        if key in used or key == "manager_list":
            continue
        if key in _REFERENCE_KEYS:
            ignored.setdefault(_REFERENCE_KEYS[key], []).append(key)
            continue
        close = difflib.get_close_matches(key, sorted(used | set(_REFERENCE_KEYS)), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        lines.append(f"[slapos] {key} in {path}: unknown option, ignored{hint}")
    for reason, keys in ignored.items():
        lines.append(f"[slapos] {', '.join(keys)} in {path}: not used by slapgrid: {reason}")
    return lines


_warned: set[str] = set()


def warn_once(lines: Iterable[str]) -> None:
    """Log each line, unless this process already did (a reload does not repeat them)."""
    for line in lines:
        if line not in _warned:
            _warned.add(line)
            log.warning("%s", line)


def forget_warnings() -> None:
    """For tests: the next `warn_once` logs every line again."""
    _warned.clear()
