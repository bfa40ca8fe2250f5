"""Running children as the owner of a directory, in a clean environment, with their output.

Every child the agent starts (bootstraps, buildouts, custom bootstrap scripts, promises,
report scripts) goes through `run`: it switches to the directory owner when the agent is
root, scrubs the environment, closes stdin and inherited descriptors, merges stdout and
stderr, streams the output line by line to a callback and a log file while keeping the
last lines for error reports, and can be stopped by a timeout or a cancellation event. The
switch of identity is done by `subprocess` itself (`user=`, `group=`, `extra_groups=`,
`umask=`), which is safe with the threads of parallel builds, unlike a `preexec_fn`.
"""

from __future__ import annotations

import contextlib
import os
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
from slapgrid.node.identity import IdentityError, RootGroup, RunAs, run_as

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
INHERIT_UMASK = -1  # the child keeps the agent's umask
CANCEL_GRACE = 1.5  # seconds a cancelled child gets on SIGTERM: Ctrl-C ends a run within 2 s
STRAY_GRACE = 1.0  # seconds to keep reading after the child exited
NOT_CAPTURED = "(output not captured in debug mode)"


class ProcessError(SlapgridError):
    """A child could not be started, or would have to run as root."""


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
    user: RunAs | None = None,
    umask: int = INSTANCE_UMASK,
    env: Mapping[str, str] | None = None,
    environment: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    output: Callable[[str], None] | None = None,
    log_file: Path | None = None,
    timeout: float | None = None,
    timeout_grace: float = 0.0,
    cancel: threading.Event | None = None,
    capture: bool = True,
    pass_fds: Sequence[int] = (),
) -> ProcessResult:
    """Run `argv` in `cwd` as the owner of `owner_of` (default `cwd`) and wait for it.

    `user` is an owner the caller already resolved (promises: once per partition, under
    their own policy). The child gets the agent's environment, cleaned, plus `env`, unless
    `environment` replaces it whole; `stdin` is written to it, then closed. Each output line
    goes to `output` and to `log_file` (appended). A child past its `timeout` gets
    `timeout_grace` seconds on SIGTERM before its tree is killed. Without `capture`
    (buildout's debug mode) the child shares the agent's terminal and nothing is kept.
    `pass_fds` stay open in the child, e.g. a lock that must outlive a killed agent.
    """
    if user is None:
        try:
            user = run_as(owner_of or cwd, RootGroup.REFUSE)
        except IdentityError as exc:
            raise ProcessError(str(exc)) from None
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
                env=dict(environment) if environment is not None else clean_environment(home, env),
                stdin=_stdin_mode(stdin, capture),
                stdout=subprocess.PIPE if capture else None,
                stderr=subprocess.STDOUT if capture else None,
                close_fds=True,
                pass_fds=tuple(pass_fds),
                start_new_session=True,
                umask=umask,
                **user.popen_options(),
            )
        except OSError as exc:
            raise ProcessError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
        deadline = None if timeout is None else started + timeout
        try:
            _feed(child, stdin)
            if capture:
                timed_out, cancelled = _pump(child, emit, deadline, cancel, timeout_grace)
            else:
                timed_out, cancelled = _wait(child, deadline, cancel, timeout_grace)
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


def _stdin_mode(stdin: bytes | None, capture: bool) -> int | None:
    if stdin is not None:
        return subprocess.PIPE
    return subprocess.DEVNULL if capture else None


def _feed(child: subprocess.Popen[bytes], stdin: bytes | None) -> None:
    """Write `stdin` from a thread: a child that never reads it still meets its timeout."""
    pipe = child.stdin
    if stdin is None or pipe is None:
        return

    def write() -> None:
        with contextlib.suppress(OSError):  # the child exited or closed its end
            pipe.write(stdin)
        with contextlib.suppress(OSError):
            pipe.close()

    threading.Thread(target=write, name=f"stdin-{child.pid}", daemon=True).start()


def _grace(stopped: str, timeout_grace: float) -> float:
    return CANCEL_GRACE if stopped == "cancel" else timeout_grace


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
    timeout_grace: float,
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
                    kill_tree(child.pid, grace=_grace(stopped, timeout_grace))
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
    child: subprocess.Popen[bytes],
    deadline: float | None,
    cancel: threading.Event | None,
    timeout_grace: float,
) -> tuple[bool, bool]:
    while child.poll() is None:
        stopped = _stop_reason(deadline, cancel)
        if stopped is not None:
            kill_tree(child.pid, grace=_grace(stopped, timeout_grace))
            return stopped == "timeout", stopped == "cancel"
        time.sleep(0.2)
    return False, False
