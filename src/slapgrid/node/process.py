"""Running children as the owner of a directory, in a clean environment, with their output.

Every child the agent starts (bootstraps, buildouts, custom bootstrap scripts) goes
through `run`: it switches to the directory owner when the agent is root, scrubs the
environment, closes stdin and inherited descriptors, merges stdout and stderr, streams the
output line by line to a callback and a log file while keeping the last lines for error
reports, and can be stopped by a timeout or a cancellation event. The switch of identity
is done by `subprocess` itself (`user=`, `group=`, `extra_groups=`, `umask=`), which is safe
with the threads of parallel builds, unlike a `preexec_fn`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import selectors
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from slapgrid.errors import SlapgridError

# What the reference scrubs from the agent's environment before starting a child.
SCRUBBED = frozenset(
    {
        "PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONY2K", "PYTHONOPTIMIZE",
        "PYTHONDEBUG", "PYTHONDONTWRITEBYTECODE", "PYTHONINSPECT", "PYTHONUNBUFFERED",
        "PYTHONVERBOSE", "CONFIG_SITE", "ENV", "LOGNAME", "TEMP", "TMP", "TMPDIR",
        "LANG", "LANGUAGE",
    }
    | {
        f"LC_{name}"
        for name in (
            "ADDRESS", "COLLATE", "CTYPE", "IDENTIFICATION", "MEASUREMENT", "MESSAGES",
            "MONETARY", "NAME", "NUMERIC", "PAPER", "SOURCED", "TELEPHONE", "TIME",
        )
    }
)  # fmt: skip
INSTANCE_UMASK = 0o027
SOFTWARE_UMASK = 0o022
TAIL_BYTES = 64 * 1024
CANCEL_GRACE = 5.0  # seconds a cancelled child gets to exit on SIGTERM
STRAY_GRACE = 1.0  # seconds to keep reading after the child exited
NOT_CAPTURED = "(output not captured in debug mode)"


class ProcessError(SlapgridError):
    """A child could not be started, or would have to run as root."""


@dataclass(frozen=True)
class Identity:
    """Who a child runs as; `None` fields mean "stay who the agent is"."""

    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] = ()
    name: str | None = None
    home: str | None = None


@dataclass(frozen=True)
class ProcessResult:
    returncode: int
    tail: str  # the last TAIL_BYTES of the output, for error reports
    duration: float
    timed_out: bool = False
    cancelled: bool = False
    timeout: float | None = None  # the limit it ran under

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not (self.timed_out or self.cancelled)


def owner_identity(directory: Path) -> Identity:
    """The identity a child working on `directory` must have.

    As root, that is the directory's owner, never uid or gid 0 (a root-owned directory
    is refused). When the directory belongs to the agent's own user, or the agent is not
    root and so cannot switch, children run as the agent: rootless mode keeps partitions
    owned by the user running slapgrid.
    """
    info = directory.stat()
    euid = os.geteuid()
    if info.st_uid == euid or euid != 0:
        return Identity()
    if info.st_gid == 0:
        raise ProcessError(
            f"refusing to run a child as group 0 (root) for {directory}: "
            "give the directory to the partition or software user"
        )
    try:
        entry = pwd.getpwuid(info.st_uid)
    except KeyError:
        return Identity(info.st_uid, info.st_gid, (info.st_gid,))
    groups = tuple(os.getgrouplist(entry.pw_name, info.st_gid))
    return Identity(info.st_uid, info.st_gid, groups, entry.pw_name, entry.pw_dir)


def user_home(directory: Path) -> Path:
    """Home directory of the owner of `directory` (bootstraps run with it); the directory
    itself when the owner has no passwd entry."""
    try:
        return Path(pwd.getpwuid(directory.stat().st_uid).pw_dir)
    except KeyError:
        return directory


def clean_environment(
    home: Path | str, extra: Mapping[str, str] | None = None, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The agent's environment minus what could change how a child Python behaves."""
    source = os.environ if base is None else base
    environment = {key: value for key, value in source.items() if key not in SCRUBBED}
    environment["HOME"] = str(home)
    environment["PYTHONNOUSERSITE"] = "true"
    environment.update(extra or {})
    return environment


class Tail:
    """The last `limit` bytes of output, kept as whole lines."""

    def __init__(self, limit: int = TAIL_BYTES) -> None:
        self.limit = limit
        self.lines: deque[str] = deque()
        self.size = 0

    def add(self, line: str) -> None:
        self.lines.append(line)
        self.size += len(line) + 1
        while self.size > self.limit and len(self.lines) > 1:
            self.size -= len(self.lines.popleft()) + 1

    def text(self) -> str:
        return "\n".join(self.lines)


def kill_tree(pid: int, *, grace: float = 0.0) -> None:
    """Stop a child and all its descendants.

    With a grace period, SIGTERM first so buildout can clean up; then every process still
    there is suspended (so none respawns) and killed, group included. The child itself is
    left for its `Popen` to reap, so its exit status is not lost.
    """
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    if grace > 0:
        for member in tree:
            with contextlib.suppress(psutil.Error):
                member.terminate()
        tree = _wait_gone(tree, grace)
    for member in tree:
        with contextlib.suppress(psutil.Error):
            member.suspend()
    for member in tree:
        with contextlib.suppress(psutil.Error):
            member.kill()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # anything the listing raced with
    _wait_gone(tree, 5.0)


def _wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait, without reaping anything, until the processes are dead; return the others."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [member for member in processes if _alive(member)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def _alive(member: psutil.Process) -> bool:
    try:
        return member.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def run(
    argv: Sequence[str],
    *,
    cwd: Path,
    home: Path | str,
    owner_of: Path | None = None,
    umask: int = INSTANCE_UMASK,
    env: Mapping[str, str] | None = None,
    output: Callable[[str], None] | None = None,
    log_file: Path | None = None,
    timeout: float | None = None,
    cancel: threading.Event | None = None,
    capture: bool = True,
    pass_fds: Sequence[int] = (),
) -> ProcessResult:
    """Run `argv` in `cwd` as the owner of `owner_of` (default `cwd`) and wait for it.

    Each output line goes to `output` and to `log_file` (appended). Without `capture`
    (buildout's debug mode) the child shares the agent's terminal and nothing is kept.
    `pass_fds` stay open in the child, e.g. a lock that must outlive a killed agent.
    """
    identity = owner_identity(owner_of or cwd)
    tail = Tail()
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(log_file.open("a", encoding="utf-8")) if log_file else None

        def emit(line: str) -> None:
            tail.add(line)
            if log is not None:
                log.write(line + "\n")
                log.flush()
            if output is not None:
                output(line)

        started = time.monotonic()
        try:
            child = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=clean_environment(home, env),
                stdin=subprocess.DEVNULL if capture else None,
                stdout=subprocess.PIPE if capture else None,
                stderr=subprocess.STDOUT if capture else None,
                close_fds=True,
                pass_fds=tuple(pass_fds),
                start_new_session=True,
                umask=umask,
                user=identity.uid,
                group=identity.gid,
                extra_groups=list(identity.groups) if identity.uid is not None else None,
            )
        except OSError as exc:
            raise ProcessError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
        deadline = None if timeout is None else started + timeout
        try:
            if capture:
                timed_out, cancelled = _pump(child, emit, deadline, cancel)
            else:
                timed_out, cancelled = _wait(child, deadline, cancel)
        except BaseException:
            kill_tree(child.pid)
            child.wait()
            raise
        returncode = child.wait()
        if timed_out:
            emit(f"(killed after {timeout:g} s: timeout)")
        elif cancelled:
            emit("(stopped: the agent was asked to stop)")
    return ProcessResult(
        returncode=returncode,
        tail=tail.text() if capture else NOT_CAPTURED,
        duration=time.monotonic() - started,
        timed_out=timed_out,
        cancelled=cancelled,
        timeout=timeout,
    )


def _stop_reason(deadline: float | None, cancel: threading.Event | None) -> str | None:
    if cancel is not None and cancel.is_set():
        return "cancel"
    if deadline is not None and time.monotonic() >= deadline:
        return "timeout"
    return None


def _pump(
    child: subprocess.Popen[bytes],
    emit: Callable[[str], None],
    deadline: float | None,
    cancel: threading.Event | None,
) -> tuple[bool, bool]:
    """Read the child's output until EOF, checking for timeout and cancellation."""
    stream = child.stdout
    assert stream is not None
    pending = b""
    stopped: str | None = None
    exited_at: float | None = None
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while True:
            if stopped is None:
                stopped = _stop_reason(deadline, cancel)
                if stopped is not None:
                    kill_tree(child.pid, grace=CANCEL_GRACE if stopped == "cancel" else 0)
            if not selector.select(timeout=0.2):
                if child.poll() is None:
                    continue
                # The child is gone but something it started still holds the pipe:
                # give it a moment to flush, then stop listening.
                exited_at = exited_at or time.monotonic()
                if stopped is not None or time.monotonic() - exited_at > STRAY_GRACE:
                    break
                continue
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                emit(line.decode("utf-8", "replace").rstrip("\r"))
    if pending:
        emit(pending.decode("utf-8", "replace").rstrip("\r"))
    stream.close()
    return stopped == "timeout", stopped == "cancel"


def _wait(
    child: subprocess.Popen[bytes], deadline: float | None, cancel: threading.Event | None
) -> tuple[bool, bool]:
    while child.poll() is None:
        stopped = _stop_reason(deadline, cancel)
        if stopped is not None:
            kill_tree(child.pid, grace=CANCEL_GRACE if stopped == "cancel" else 0)
            return stopped == "timeout", stopped == "cancel"
        time.sleep(0.2)
    return False, False
