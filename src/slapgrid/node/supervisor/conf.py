"""The supervisord configuration files, rendered from the partitions (pure, but for reading
`P/etc/run` and `P/etc/service`).

Under the instance root `IR` (paths in `layout.SupervisorPaths`):

* `IR/etc/supervisord.conf` (0600): the daemon, its socket `IR/sv.sock` (0700), its log, its
  pid file, the watchdog event listener, and `[include] IR/etc/supervisord.conf.d/*.conf`;
* `IR/etc/supervisord.conf.d/<pid>.conf` (0600): the group `<pid>` of one partition, one
  program `<pid>_<name>` per entry of `P/etc/run` and `P/etc/service`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from slapgrid.node.identity import RootGroup, run_as
from slapgrid.node.layout import SupervisorPaths
from slapgrid.node.supervisor.errors import SupervisorError

log = logging.getLogger(__name__)

SERVICE_SUFFIX = "-on-watch"
"""Appended to the process name of `etc/service` programs: what the watchdog watches."""

WATCHDOG = "watchdog"
WATCHDOG_EVENTS = ("PROCESS_STATE_EXITED", "PROCESS_STATE_FATAL")
RPC_INTERFACE_FACTORY = "supervisor.rpcinterface:make_main_rpcinterface"
PROGRAM_LOG_MAXBYTES = "1MB"
PROGRAM_LOG_BACKUPS = 2

_NAME = re.compile(r"[A-Za-z0-9_@+.=-]+")  # fullmatch: no trailing "\n"
"""Names supervisord and its ini parser take verbatim: no ':', '/', ',', ';', '#', '%', blanks."""

_INLINE_COMMENT = re.compile(r"\s[;#]")


@dataclass(frozen=True)
class Program:
    """One entry of `P/etc/run` (runs once) or `P/etc/service` (kept alive, watched)."""

    name: str
    command: Path
    service: bool
    digest: str = ""  # of the script: a changed script is a changed program, so restarted

    @property
    def process_name(self) -> str:
        return self.name + SERVICE_SUFFIX if self.service else self.name


def _value(text: str, what: str) -> str:
    """A value the ini parser keeps intact: one line, no inline comment marker."""
    if "\n" in text or "\r" in text or _INLINE_COMMENT.search(text):
        raise SupervisorError(f"{what} cannot be written to a supervisord configuration: {text!r}")
    return text


def _path(path: Path | str, what: str) -> str:
    """A path for a value supervisord %-expands (sometimes twice): '%' cannot be escaped."""
    text = str(path)
    if "%" in text:
        raise SupervisorError(f"{what} contains '%', which supervisord cannot express: {text}")
    return _value(text, what)


def _escape(text: str) -> str:
    """A value supervisord %-expands exactly once (command, environment)."""
    return text.replace("%", "%%")


def _section(name: str, options: Iterable[tuple[str, object]]) -> str:
    lines = [f"[{name}]"]
    lines += [f"{key} = {value}" for key, value in options]
    return "\n".join(lines) + "\n"


def watchdog_command(
    python: str,
    instance_root: Path,
    master_url: str,
    computer_id: str,
    certificate_repository_path: Path | None = None,
) -> list[str]:
    """argv of the watchdog event listener."""
    argv = [python, "-m", "slapgrid.node.supervisor.bang_listener", "--master-url", master_url]
    argv += ["--computer-id", computer_id, "--instance-root", str(instance_root)]
    if certificate_repository_path is not None:
        argv += ["--certificate-repository-path", str(certificate_repository_path)]
    return argv


def render_supervisord_conf(
    instance_root: Path,
    *,
    python: str,
    master_url: str,
    computer_id: str,
    certificate_repository_path: Path | None = None,
    pythonpath: str | None = None,
) -> str:
    """The content of `IR/etc/supervisord.conf` (pure)."""
    root = Path(instance_root)
    paths = SupervisorPaths(root)
    socket_path = _path(paths.socket, "instance root")
    command = watchdog_command(python, root, master_url, computer_id, certificate_repository_path)
    watchdog: list[tuple[str, object]] = [
        ("command", _escape(_value(shlex.join(command), "watchdog command"))),
        ("events", ",".join(WATCHDOG_EVENTS)),
        ("directory", _path(root, "instance root")),
        ("autostart", "true"),
        ("autorestart", "true"),
        ("buffer_size", 100),
        ("stderr_logfile", _path(paths.watchdog_log, "instance root")),
        ("stderr_logfile_maxbytes", "5MB"),
        ("stderr_logfile_backups", 2),
    ]
    if pythonpath:
        watchdog.append(("environment", f'PYTHONPATH="{_escape(_env_value(pythonpath))}"'))
    return "\n".join(
        [
            "# Written by slapgrid; rewritten on every run.",
            _section("unix_http_server", [("file", socket_path), ("chmod", "0700")]),
            _section(
                "supervisord",
                [
                    ("logfile", _path(paths.log, "instance root")),
                    ("logfile_maxbytes", "50MB"),
                    ("logfile_backups", 10),
                    ("loglevel", "info"),
                    ("pidfile", _path(paths.pid_file, "instance root")),
                    ("childlogdir", _path(paths.log_dir, "instance root")),
                    ("directory", _path(root, "instance root")),
                    ("nodaemon", "false"),
                ],
            ),
            _section(
                "rpcinterface:supervisor",
                [("supervisor.rpcinterface_factory", RPC_INTERFACE_FACTORY)],
            ),
            _section("supervisorctl", [("serverurl", f"unix://{socket_path}")]),
            _section(f"eventlistener:{WATCHDOG}", watchdog),
            _section(
                "include",
                [("files", _path(paths.conf_dir / "*.conf", "instance root"))],
            ),
        ]
    )


def _env_value(text: str) -> str:
    if '"' in text or "\\" in text:
        raise SupervisorError(f"environment value cannot be quoted for supervisord: {text!r}")
    return _value(text, "environment value")


def partition_programs(partition_path: Path) -> list[Program]:
    """Sorted entries of `P/etc/run` then `P/etc/service` (any entry: no executable check).

    Names supervisord cannot carry are skipped with a warning, as is a service named like a
    run script (both would be the program `<pid>_<name>`).
    """
    programs: list[Program] = []
    seen: set[str] = set()
    for folder, service in (("run", False), ("service", True)):
        directory = partition_path / "etc" / folder
        try:
            names = sorted(os.listdir(directory))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            raise SupervisorError(f"cannot list {directory}: {exc.strerror}") from None
        for name in names:
            if not _NAME.fullmatch(name) or name in seen:
                log.warning("Ignoring %s: unusable or duplicate program name", directory / name)
                continue
            seen.add(name)
            programs.append(Program(name, directory / name, service, _digest(directory / name)))
    return programs


def _digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        return ""


def render_partition_conf(
    pid: str,
    partition_path: Path,
    programs: Sequence[Program],
    *,
    user: str | None,
    environment: Mapping[str, str],
) -> str:
    """The content of `IR/etc/supervisord.conf.d/<pid>.conf` (pure).

    Run scripts (`etc/run`) run once: `autorestart=false`, `startsecs=0`, as the reference.
    Services (`etc/service`) are restarted by supervisord when they exit
    (`autorestart=true`, `startsecs=1`, `startretries=3`, then FATAL) -- a deliberate
    difference from the reference, where a dead service stays down until the watchdog's bang
    makes the master bump the partition and the next run restarts it. The watchdog still
    sees every exit and still bangs once per deployed timestamp, so the master learns.
    """
    check_name(pid, "partition id")
    directory = _path(partition_path, f"partition {pid} path")
    env = ",".join(f'{key}="{_escape(_env_value(value))}"' for key, value in environment.items())
    sections = [
        _section(f"group:{pid}", [("programs", ",".join(f"{pid}_{p.name}" for p in programs))])
    ]
    for program in programs:
        check_name(program.name, "program name")
        options: list[tuple[str, object]] = [
            ("command", _escape(_value(shlex.quote(str(program.command)), "command"))),
            ("process_name", program.process_name),
            ("directory", directory),
            ("autostart", "false"),
        ]
        if program.service:
            options += [("autorestart", "true"), ("startsecs", 1), ("startretries", 3)]
        else:
            options += [("autorestart", "false"), ("startsecs", 0), ("startretries", 0)]
        options += [
            ("exitcodes", 0),
            ("stopsignal", "TERM"),
            ("stopwaitsecs", 60),
            ("stopasgroup", "true"),
            ("killasgroup", "true"),
            ("redirect_stderr", "true"),
            ("stdout_logfile", _path(partition_path / f".{pid}_{program.name}.log", "log file")),
            ("stdout_logfile_maxbytes", PROGRAM_LOG_MAXBYTES),
            ("stdout_logfile_backups", PROGRAM_LOG_BACKUPS),
            ("environment", f'{env},SLAPGRID_PROGRAM_DIGEST="{program.digest}"'),
        ]
        if user is not None:
            options.append(("user", user))
        sections.append(_section(f"program:{pid}_{program.name}", options))
    return "# Written by slapgrid for partition " + pid + ".\n" + "\n".join(sections)


def check_name(name: str, what: str) -> str:
    if not _NAME.fullmatch(name):
        raise SupervisorError(f"{what} {name!r} cannot be used as a supervisord name")
    return name


def program_identity(
    owner_uid: int, partition_path: Path, euid: int | None = None
) -> tuple[str | None, dict[str, str]]:
    """`user=` (None when no switch is possible or needed) and USER/LOGNAME/HOME for programs.

    supervisord switches by account name, so an owner without a passwd entry is refused.
    """
    euid = os.geteuid() if euid is None else euid
    user = run_as(partition_path, RootGroup.ALLOW, uid=owner_uid, euid=euid)
    owner = user.owner
    if user.switch and not owner.known:
        raise SupervisorError(f"owner uid {owner_uid} of {partition_path} has no passwd entry")
    if not user.switch and owner_uid != euid:
        log.warning("Programs of %s run as uid %d, not its owner", partition_path, euid)
    environment = {"USER": owner.name, "LOGNAME": owner.name, "HOME": owner.home}
    return (owner.name if user.switch else None), environment
