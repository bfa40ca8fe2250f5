"""The node's supervisord: one per instance root, driven over XML-RPC on a unix socket.

Layout under the instance root `IR`:

* `IR/etc/supervisord.conf` (0600): the daemon, its socket `IR/sv.sock` (0700), its log
  `IR/var/log/supervisord.log`, its pid file `IR/var/run/supervisord.pid`, the watchdog
  event listener, and `[include] IR/etc/supervisord.conf.d/*.conf`;
* `IR/etc/supervisord.conf.d/<pid>.conf` (0600): the group `<pid>` of one partition, one
  program `<pid>_<name>` per entry of `P/etc/run` and `P/etc/service`.

A partition is *started* when its group is known and asked to start, and *stopped* when its
file is gone and supervisord has forgotten the group. Programs are `autostart=false`: after a
reboot they come back through a deployment or the offline-mode `start_all()`.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import pwd
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
import xmlrpc.client
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import psutil
from supervisor.xmlrpc import Faults, SupervisorTransport, UnixStreamHTTPConnection

import slapgrid
from slapgrid.errors import SlapgridError
from slapgrid.node.files import write_if_changed

log = logging.getLogger(__name__)

SERVICE_SUFFIX = "-on-watch"
"""Appended to the process name of `etc/service` programs: what the watchdog watches."""

WATCHDOG = "watchdog"
WATCHDOG_EVENTS = ("PROCESS_STATE_EXITED", "PROCESS_STATE_FATAL")
SUPERVISORD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""The only variable supervisord (hence every program) inherits: a scrubbed, usable PATH."""

RPC_INTERFACE_FACTORY = "supervisor.rpcinterface:make_main_rpcinterface"
PROGRAM_LOG_MAXBYTES = "1MB"
PROGRAM_LOG_BACKUPS = 2
SOCKET_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL
SHUTDOWN_TIMEOUT = 120.0
"""How long a supervisord may take to exit: it stops its groups one after the other."""

_NAME = re.compile(r"^[A-Za-z0-9_@+.=-]+$")
"""Names supervisord and its ini parser take verbatim: no ':', '/', ',', ';', '#', '%', blanks."""

_INLINE_COMMENT = re.compile(r"\s[;#]")


class SupervisorError(SlapgridError):
    """supervisord could not be configured, launched, reached or obeyed."""


class SupervisorFault(SupervisorError):
    """supervisord refused an XML-RPC call; `code` is one of `supervisor.xmlrpc.Faults`."""

    def __init__(self, method: str, fault: xmlrpc.client.Fault) -> None:
        super().__init__(f"supervisord refused {method}: {fault.faultString}")
        self.code = fault.faultCode


class ProcessInfo(NamedTuple):
    """One process of a partition as `slapgrid status` shows it."""

    name: str
    state: str
    pid: int


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


@dataclass(frozen=True)
class ReloadSummary:
    """Groups supervisord learned, re-read and forgot in one `reload()`."""

    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


# --------------------------------------------------------------------------- rendering


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
    socket_path = _path(root / "sv.sock", "instance root")
    log_dir = root / "var" / "log"
    command = watchdog_command(python, root, master_url, computer_id, certificate_repository_path)
    watchdog: list[tuple[str, object]] = [
        ("command", _escape(_value(shlex.join(command), "watchdog command"))),
        ("events", ",".join(WATCHDOG_EVENTS)),
        ("directory", _path(root, "instance root")),
        ("autostart", "true"),
        ("autorestart", "true"),
        ("buffer_size", 100),
        ("stderr_logfile", _path(log_dir / "watchdog.log", "instance root")),
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
                    ("logfile", _path(log_dir / "supervisord.log", "instance root")),
                    ("logfile_maxbytes", "50MB"),
                    ("logfile_backups", 10),
                    ("loglevel", "info"),
                    ("pidfile", _path(root / "var" / "run" / "supervisord.pid", "instance root")),
                    ("childlogdir", _path(log_dir, "instance root")),
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
                [("files", _path(root / "etc" / "supervisord.conf.d" / "*.conf", "instance root"))],
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
            if not _NAME.match(name) or name in seen:
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
    if not _NAME.match(name):
        raise SupervisorError(f"{what} {name!r} cannot be used as a supervisord name")
    return name


def program_identity(owner_uid: int, partition_path: Path) -> tuple[str | None, dict[str, str]]:
    """`user=` (None when no switch is possible or needed) and USER/LOGNAME/HOME for programs."""
    try:
        entry = pwd.getpwuid(owner_uid)
    except KeyError:
        if os.geteuid() == 0 and owner_uid != 0:
            raise SupervisorError(
                f"owner uid {owner_uid} of {partition_path} has no passwd entry"
            ) from None
        name, home = str(owner_uid), str(partition_path)
    else:
        name, home = entry.pw_name, entry.pw_dir
    user = name if os.geteuid() == 0 and owner_uid != 0 else None
    if user is None and owner_uid != os.geteuid():
        log.warning("Programs of %s run as uid %d, not its owner", partition_path, os.geteuid())
    return user, {"USER": name, "LOGNAME": name, "HOME": home}


# --------------------------------------------------------------------------- XML-RPC


class _UnixConnection(UnixStreamHTTPConnection):
    """supervisor's unix-socket connection, with the timeout it lacks."""

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socketfile)


def _proxy(socket_path: Path, timeout: float) -> xmlrpc.client.ServerProxy:
    transport = SupervisorTransport(serverurl=f"unix://{socket_path}")

    def connect() -> _UnixConnection:
        connection = _UnixConnection("localhost", timeout=timeout)
        connection.socketfile = str(socket_path)
        return connection

    transport._get_connection = connect  # the one hook SupervisorTransport offers
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


_UNREACHABLE = (OSError, http.client.HTTPException, xmlrpc.client.ProtocolError)
_RELOADING = threading.Lock()
"""One reload at a time in this process: reloadConfig, then acting on its answer."""


class Supervisor:
    """The supervisord of one instance root."""

    def __init__(
        self, instance_root: Path | str, *, python: str | None = None, rpc_timeout: float = 30.0
    ) -> None:
        self.instance_root = Path(instance_root).absolute()
        self.python = python or sys.executable
        self.rpc_timeout = rpc_timeout

    @property
    def conf_path(self) -> Path:
        return self.instance_root / "etc" / "supervisord.conf"

    @property
    def conf_dir(self) -> Path:
        return self.instance_root / "etc" / "supervisord.conf.d"

    @property
    def socket_path(self) -> Path:
        return self.instance_root / "sv.sock"

    @property
    def log_path(self) -> Path:
        return self.instance_root / "var" / "log" / "supervisord.log"

    def partition_conf(self, pid: str) -> Path:
        return self.conf_dir / f"{check_name(pid, 'partition id')}.conf"

    # ----------------------------------------------------------------- files

    def ensure_config(
        self,
        master_url: str,
        computer_id: str,
        certificate_repository_path: Path | str | None = None,
    ) -> bool:
        """Create the node-level directories and write `supervisord.conf`; True if rewritten.

        A running supervisord applies a changed watchdog on the next `reload()`.
        """
        root = self.instance_root
        try:
            (root / "var").mkdir(parents=True, exist_ok=True)
            (root / "var").chmod(0o755)
            for directory in (root / "var/log", root / "var/run", root / "etc", self.conf_dir):
                directory.mkdir(parents=True, exist_ok=True)
                directory.chmod(0o700)
            text = render_supervisord_conf(
                root,
                python=self.python,
                master_url=master_url,
                computer_id=computer_id,
                certificate_repository_path=(
                    Path(certificate_repository_path).absolute()
                    if certificate_repository_path
                    else None
                ),
                pythonpath=str(Path(slapgrid.__file__).resolve().parents[1]),
            )
            return write_if_changed(self.conf_path, text, 0o600)
        except OSError as exc:
            raise SupervisorError(f"cannot write supervisord configuration: {exc}") from None

    def write_partition(
        self, pid: str, partition_path: Path | str, owner_uid: int | None = None
    ) -> bool:
        """(Re)write the program file of a partition; True if it changed.

        `owner_uid` defaults to the owner of the partition directory. A partition without
        any run script or service has no file (and hence no group).
        """
        partition_path = Path(partition_path).absolute()
        programs = partition_programs(partition_path)
        if not programs:
            log.warning("No runners nor services found for partition %r", pid)
            return self.remove_partition(pid)
        if owner_uid is None:
            owner_uid = partition_path.stat().st_uid
        user, environment = program_identity(owner_uid, partition_path)
        text = render_partition_conf(
            pid, partition_path, programs, user=user, environment=environment
        )
        try:
            return write_if_changed(self.partition_conf(pid), text, 0o600)
        except OSError as exc:
            raise SupervisorError(f"cannot write supervisord program file: {exc}") from None

    def remove_partition(self, pid: str) -> bool:
        """Delete the program file of a partition; True if there was one."""
        try:
            self.partition_conf(pid).unlink()
        except FileNotFoundError:
            return False
        return True

    # ----------------------------------------------------------------- daemon

    def _call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        proxy = _proxy(self.socket_path, timeout or self.rpc_timeout)
        try:
            return getattr(proxy.supervisor, method)(*args)
        except xmlrpc.client.Fault as fault:
            raise SupervisorFault(method, fault) from None
        except _UNREACHABLE as exc:
            raise SupervisorError(
                f"supervisord is not reachable on {self.socket_path}: {exc}"
            ) from None

    def state(self) -> str | None:
        """supervisord's state name (RUNNING, SHUTDOWN, …), None when nobody answers."""
        if not self.socket_path.exists():
            return None
        try:
            return self._call("getState", timeout=5.0)["statename"]
        except SupervisorError:
            return None

    def is_running(self) -> bool:
        return self.state() == "RUNNING"

    @property
    def pid_path(self) -> Path:
        return self.instance_root / "var" / "run" / "supervisord.pid"

    def ensure_running(self, timeout: float = 15.0) -> None:
        """Launch supervisord unless one already answers on the socket; wait for RUNNING.

        A supervisord of ours that is still shutting down (after `supervisorctl shutdown`,
        while it stops its programs) holds the socket and refuses calls: wait until it is
        gone rather than fail to launch a second one beside it.
        """
        if self.state() == "RUNNING":
            self._ensure_watchdog()
            return
        previous = self._previous_daemon()
        if previous is not None:
            log.info("waiting for the previous supervisord (pid %d) to exit", previous.pid)
            try:
                previous.wait(SHUTDOWN_TIMEOUT)
            except psutil.TimeoutExpired:
                raise SupervisorError(
                    f"supervisord (pid {previous.pid}) neither answers on {self.socket_path} "
                    f"nor exits; see {self.log_path}"
                ) from None
        try:
            self._launch()
        except SupervisorError:
            if self.state() != "RUNNING":  # else another run launched it at the same time
                raise
        deadline = time.monotonic() + timeout
        delay = 0.02
        while (state := self.state()) != "RUNNING":
            if time.monotonic() > deadline:
                raise SupervisorError(
                    f"supervisord did not become RUNNING within {timeout:g} s "
                    f"(state {state}); see {self.log_path}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    def _previous_daemon(self) -> psutil.Process | None:
        """The live supervisord that our pid file names, if any (a stale file names none)."""
        try:
            process = psutil.Process(int(self.pid_path.read_text().strip()))
            command = process.cmdline()
        except (OSError, ValueError, psutil.Error):
            return None
        return process if str(self.conf_path) in command else None

    def _launch(self) -> None:
        if not self.conf_path.is_file():
            raise SupervisorError(f"{self.conf_path} does not exist; write it first")
        if len(str(self.socket_path).encode()) > SOCKET_PATH_MAX:
            raise SupervisorError(f"socket path too long for a unix socket: {self.socket_path}")
        argv = [self.python, "-m", "supervisor.supervisord", "-c", str(self.conf_path)]
        try:
            done = subprocess.run(  # supervisord forks and its parent exits at once
                argv,
                cwd=self.instance_root,
                env={"PATH": SUPERVISORD_PATH},
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SupervisorError(f"failed to launch supervisord: {exc}") from None
        if done.returncode:
            lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
            # supervisord ends with "For help, use … -h"; the reason is its "Error:" line
            reason = next((line for line in lines if line.startswith("Error:")), lines[-1])
            raise SupervisorError(f"failed to launch supervisord: {reason}")

    def _ensure_watchdog(self) -> None:
        """Restart a dead watchdog; re-read the configuration if supervisord lacks it."""
        name = f"{WATCHDOG}:{WATCHDOG}"
        try:
            info = self._call("getProcessInfo", name)
        except SupervisorFault as fault:
            if fault.code != Faults.BAD_NAME:
                raise
            self.reload()
            return
        if info["statename"] not in ("RUNNING", "STARTING"):
            log.warning("The supervisord watchdog was %s; starting it", info["statename"])
            self._call("startProcess", name, False)

    def shutdown(self, timeout: float = SHUTDOWN_TIMEOUT) -> None:
        """Stop every program and supervisord itself; wait until it is gone."""
        if self.state() is None:
            return
        try:
            process = psutil.Process(self._call("getPID"))
            self._call("shutdown")
        except (SupervisorError, psutil.NoSuchProcess):
            return
        try:
            process.wait(timeout)
        except psutil.TimeoutExpired:
            raise SupervisorError(
                f"supervisord (pid {process.pid}) did not stop within {timeout:g} s"
            ) from None

    # ----------------------------------------------------------------- groups

    def reload(self) -> ReloadSummary:
        """Make supervisord's groups match the files (supervisorctl's `update`).

        Removed groups are stopped (waiting) and removed; changed groups are stopped,
        removed and re-added (not started); new groups are added.
        """
        with _RELOADING:  # parallel deployments would each add what the first one added
            [[added, changed, removed]] = self._call("reloadConfig")
            for group in removed:
                self._stop_group(group)
                self._remove_group(group)
            for group in changed:
                self._stop_group(group)
                self._remove_group(group)
                self._add_group(group)
            for group in added:
                self._add_group(group)
        return ReloadSummary(tuple(added), tuple(changed), tuple(removed))

    def _add_group(self, group: str) -> None:
        try:
            self._call("addProcessGroup", group)
        except SupervisorFault as fault:
            if fault.code != Faults.ALREADY_ADDED:  # another agent process's reload did it
                raise

    def _stop_group(self, group: str) -> None:
        try:
            results = self._call("stopProcessGroup", group, True, timeout=180.0)
        except SupervisorFault as fault:
            if fault.code == Faults.BAD_NAME:
                return
            raise
        for result in results:
            if result["status"] != Faults.SUCCESS:
                log.warning(
                    "Process %s:%s did not stop: %s",
                    group,
                    result["name"],
                    result["description"],
                )

    def _remove_group(self, group: str, tries: int = 10) -> None:
        for attempt in range(tries):
            try:
                self._call("removeProcessGroup", group)
                return
            except SupervisorFault as fault:
                if fault.code == Faults.BAD_NAME:
                    return
                if fault.code != Faults.STILL_RUNNING or attempt == tries - 1:
                    raise
            time.sleep(0.5)

    def start_partition(self, pid: str) -> None:
        """Ask supervisord to start every stopped process of the group; do not wait."""
        try:
            self._call("startProcessGroup", check_name(pid, "partition id"), False)
        except SupervisorFault as fault:
            if fault.code != Faults.BAD_NAME:
                raise
            log.info("Nothing to start for partition %r", pid)

    def stop_partition(self, pid: str) -> None:
        """Forget the partition: delete its program file and reload (stops its processes)."""
        self.remove_partition(pid)
        self.reload()

    def start_all(self) -> None:
        """Start every process of every group without waiting (offline mode)."""
        self._call("startAllProcesses", False)

    def process_info(self, pid: str) -> list[ProcessInfo]:
        """The processes of a partition's group, empty when supervisord does not know it."""
        return [
            ProcessInfo(info["name"], info["statename"], info["pid"])
            for info in self._call("getAllProcessInfo")
            if info["group"] == pid
        ]

    def supervisorctl(self, args: Sequence[str]) -> int:
        """Run supervisor's own supervisorctl against this node's daemon; its exit code."""
        argv = [self.python, "-m", "supervisor.supervisorctl", "-c", str(self.conf_path), *args]
        try:
            return subprocess.run(argv, check=False).returncode
        except OSError as exc:
            raise SupervisorError(f"cannot run supervisorctl: {exc}") from None
