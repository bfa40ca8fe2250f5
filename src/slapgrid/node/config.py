"""The node's configuration: the `[slapos]` section of slapos.cfg, overridden by flags.

Reading is strict where the reference is sloppy: numbers become numbers, booleans must be
booleans, and every problem names the option it comes from (a `ConfigError`, exit 2).
"""

from __future__ import annotations

import configparser
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slapgrid.errors import ConfigError
from slapgrid.slap.urls import InvalidURL, normalise_master_url

ENV_VAR = "SLAPOS_CONFIGURATION"
DEFAULT_LOCATIONS = (Path("/etc/opt/slapos/slapos.cfg"), Path("~/.slapos/slapos.cfg"))

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)i?B?\s*", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def find_config_file(explicit: str | os.PathLike[str] | None) -> Path | None:
    """The file to read: the flag, else $SLAPOS_CONFIGURATION, else the first default found."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    for candidate in DEFAULT_LOCATIONS:
        path = candidate.expanduser()
        if path.is_file():
            return path
    return None


def read_config_file(path: Path) -> configparser.ConfigParser:
    """Parse slapos.cfg as the reference does (interpolation on), with one-line errors."""
    parser = configparser.ConfigParser(interpolation=configparser.BasicInterpolation())
    try:
        with path.open(encoding="utf-8") as handle:
            parser.read_file(handle)
    except FileNotFoundError:
        raise ConfigError(f"configuration file does not exist: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc}") from None
    except configparser.Error as exc:
        first_line = str(exc).splitlines()[0]
        raise ConfigError(f"cannot parse configuration file {path}: {first_line}") from None
    return parser


def section(parser: configparser.ConfigParser | None, name: str) -> dict[str, str]:
    """One section as a plain dict (empty if absent); interpolation errors name the key."""
    if parser is None or not parser.has_section(name):
        return {}
    values = {}
    for key in parser.options(name):
        try:
            values[key] = parser.get(name, key)
        except configparser.Error as exc:
            raise ConfigError(f"[{name}] {key}: {str(exc).splitlines()[0]}") from None
    return values


def parse_bool(value: str | bool, option: str) -> bool:
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"option '{option}' must be true or false, not {value!r}")


def parse_int(value: str | int, option: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise ConfigError(f"option '{option}' must be a whole number, not {value!r}") from None


def parse_count(value: str | int, option: str) -> int:
    """A whole number of times, 0 or more (0 usually turns the behaviour off)."""
    count = parse_int(value, option)
    if count < 0:
        raise ConfigError(f"option '{option}' must be 0 or more, not {value!r}")
    return count


def parse_float(value: str | float, option: str) -> float:
    try:
        return float(str(value).strip())
    except ValueError:
        raise ConfigError(f"option '{option}' must be a number, not {value!r}") from None


def parse_seconds(value: str | float, option: str, *, zero: bool = False) -> float:
    """A period: positive and finite (`zero` allows 0, which turns a periodic run off)."""
    seconds = parse_float(value, option)
    if seconds < 0 or (seconds == 0 and not zero) or not math.isfinite(seconds):
        what = "0 or a positive number" if zero else "a positive number"
        raise ConfigError(f"option '{option}' must be {what} of seconds, not {value!r}")
    return seconds


def parse_period(value: str | int, option: str) -> int:
    """A whole, positive number of seconds (`maximum_periodicity`): 0 or less means nothing."""
    seconds = parse_int(value, option)
    if seconds <= 0:
        raise ConfigError(
            f"option '{option}' must be a positive whole number of seconds, not {value!r}"
        )
    return seconds


def parse_port(value: str | int, option: str) -> int | None:
    """A TCP port to listen on; 0 (or nothing) turns the service off."""
    port = parse_int(value, option)
    if not 0 <= port < 65536:
        raise ConfigError(f"option '{option}' must be a TCP port (0 turns metrics off)")
    return port or None


def parse_size(value: str | int, option: str) -> int:
    """`1000M`, `2G`, `512k`, `1048576` → bytes (binary units, as the reference's human2bytes)."""
    if isinstance(value, int):
        return value
    match = _SIZE.fullmatch(value)
    if not match:
        raise ConfigError(f"option '{option}' must be a size such as 1000M or 2G, not {value!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def parse_master_url(value: str) -> str:
    """The master URL, normalised; a bad one is a usage error naming the option."""
    try:
        return normalise_master_url(value)
    except InvalidURL as exc:
        raise ConfigError(f"option 'master_url' (--master-url): {exc}") from None


def parse_lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


def _option(values: Mapping[str, Any], *names: str) -> Any:
    """The first of several spellings present (`partition_timeout` / `partition-timeout`)."""
    for name in names:
        if values.get(name) not in (None, ""):
            return values[name]
    return None


@dataclass(frozen=True)
class NodeConfig:
    """Everything the node agent reads from `[slapos]` (and `[networkcache]`), typed."""

    master_url: str
    computer_id: str
    instance_root: Path
    software_root: Path
    key_file: Path | None = None
    cert_file: Path | None = None
    master_ca_file: Path | None = None
    certificate_repository_path: Path | None = None
    buildout: str | None = None
    buildout_debug: bool = False
    software_min_free_space: int = 1000 << 20
    instance_min_free_space: int = 1000 << 20
    maximum_periodicity: int = 86400
    maximal_delay: int = 0
    partition_timeout: float | None = None
    promise_timeout: float = 20.0
    promise_failures_before_redeploy: int = 3  # failed periodic checks in a row; 0: never
    root_check: bool = False
    forbid_supervisord_automatic_launch: bool = False
    shared_part_list: tuple[str, ...] = ()
    build_time_part_list: tuple[str, ...] = ()
    instance_storage_home: str = ""
    ipv4_global_network: str = ""
    jobs: int = 0
    # `slapgrid node`: periods in seconds, the status file, the Prometheus port
    instance_interval: float = 60.0
    report_interval: float = 3600.0
    software_interval: float = 3600.0  # 0: only on change or when a back-off ends
    poll_interval: float = 10.0  # fetching the document, against masters without a change feed
    status_file: Path | None = None  # None: <instance_root>/.slapgrid/daemon.json
    metrics_port: int | None = None  # None: no metrics
    source: Path | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def parallel_jobs(self) -> int:
        """`jobs`, or the core count when unset: builds and deployments are subprocess-bound."""
        return self.jobs if self.jobs > 0 else max(os.cpu_count() or 1, 1)


REQUIRED = ("master_url", "computer_id", "instance_root", "software_root")


def _seconds_or_zero(value: str | float, option: str) -> float:
    return parse_seconds(value, option, zero=True)


def _lines(value: str, option: str) -> tuple[str, ...]:
    return tuple(parse_lines(value))


def _text(value: Any, option: str) -> str:
    return str(value)


def _expanded_path(value: Any, option: str) -> Path:
    return Path(str(value)).expanduser()


# every optional [slapos] option: its parser (unset or empty: the NodeConfig default)
_PARSERS: dict[str, Callable[[Any, str], Any]] = {
    "key_file": _expanded_path,
    "cert_file": _expanded_path,
    "master_ca_file": _expanded_path,
    "certificate_repository_path": _expanded_path,
    "buildout": _text,
    "buildout_debug": parse_bool,
    "software_min_free_space": parse_size,
    "instance_min_free_space": parse_size,
    "maximum_periodicity": parse_period,
    "maximal_delay": parse_count,
    "partition_timeout": parse_seconds,
    "promise_timeout": parse_seconds,
    "promise_failures_before_redeploy": parse_count,
    "root_check": parse_bool,
    "forbid_supervisord_automatic_launch": parse_bool,
    "shared_part_list": _lines,
    "build_time_part_list": _lines,
    "instance_storage_home": _text,
    "ipv4_global_network": _text,
    "jobs": parse_count,
    "instance_interval": parse_seconds,
    "report_interval": parse_seconds,
    "software_interval": _seconds_or_zero,
    "poll_interval": parse_seconds,
    "status_file": _expanded_path,
    "metrics_port": parse_port,
}
SPELLINGS = {"partition_timeout": ("partition_timeout", "partition-timeout")}
"""Options the reference also reads under another name; the first present wins."""


def load_node_config(
    path: Path | None,
    overrides: Mapping[str, Any] | None = None,
    *,
    check_paths: bool = True,
) -> NodeConfig:
    """Merge `[slapos]`, `[networkcache]` and the flags (flags win), then validate.

    `overrides` holds the command-line values; `None` means "not given". A bad value is
    refused naming the option and where it came from (the file, or the flag). What the
    file sets that slapgrid does not do is logged once per process (`config_checks`).
    """
    from slapgrid.node import config_checks

    parser = read_config_file(path) if path is not None else None
    values: dict[str, Any] = {**section(parser, "slapos"), **section(parser, "networkcache")}
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    values.update(given)
    if parser is not None and path is not None:
        config_checks.warn_once(config_checks.review(parser, path))

    missing = [name for name in REQUIRED if values.get(name) in (None, "")]
    if missing:
        where = f" in [slapos] of {path}" if path else ""
        flags = ", ".join("--" + name.replace("_", "-") for name in missing)
        raise ConfigError(f"missing mandatory option(s){where}: {', '.join(missing)} ({flags})")

    def origin(name: str) -> str:
        if name in given:
            return "--" + name.replace("_", "-")
        where = (
            "networkcache"
            if parser is not None and parser.has_option("networkcache", name)
            else "slapos"
        )
        return f"[{where}] of {path}"

    def parsed(name: str) -> Any:
        value = _option(values, *SPELLINGS.get(name, (name,)))
        if value is None:
            return getattr(NodeConfig, name)
        try:
            return _PARSERS[name](value, name)
        except ConfigError as exc:
            raise ConfigError(f"{exc} ({origin(name)})") from None

    master_url = str(values["master_url"]).strip()
    try:  # checked here, not at the first request: names the option
        parse_master_url(master_url)
    except ConfigError as exc:  # the message names the flag already
        where = "" if "master_url" in given else f" ({origin('master_url')})"
        raise ConfigError(f"{exc}{where}") from None
    config = NodeConfig(
        master_url=master_url,
        computer_id=str(values["computer_id"]).strip(),
        instance_root=Path(values["instance_root"]).expanduser().absolute(),
        software_root=Path(values["software_root"]).expanduser().absolute(),
        **{name: parsed(name) for name in _PARSERS},
        source=path,
        extra={k: str(v) for k, v in values.items() if isinstance(v, str)},
    )
    if check_paths:
        check_node_paths(config)
    return config


def check_node_paths(config: NodeConfig) -> None:
    """Fail early, naming the option, on files and directories that must exist."""
    for name in ("instance_root", "software_root"):
        directory = getattr(config, name)
        if not directory.is_dir():
            raise ConfigError(f"option '{name}': directory {directory} does not exist")
    if (config.key_file is None) != (config.cert_file is None):
        raise ConfigError("options 'key_file' and 'cert_file' must be given together")
    for name in ("key_file", "cert_file", "master_ca_file"):
        file = getattr(config, name)
        if file is not None and not file.is_file():
            raise ConfigError(f"option '{name}': file {file} does not exist")
    repository = config.certificate_repository_path
    if repository is not None and not repository.is_dir():
        raise ConfigError(
            f"option 'certificate_repository_path': directory {repository} does not exist"
        )
    if config.root_check and os.geteuid() != 0:
        raise ConfigError("this command must be run as root (or set root_check = false)")
