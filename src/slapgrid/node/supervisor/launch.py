"""Starting and stopping the node's supervisord itself (not its programs).

One supervisord per instance root. A launch forks the daemon and waits until it answers
RUNNING; a supervisord of ours still shutting down is waited for, never doubled.
"""

from __future__ import annotations

import logging
import subprocess
import time

import psutil

from slapgrid.node.layout import SupervisorPaths
from slapgrid.node.supervisor.errors import SupervisorError
from slapgrid.node.supervisor.rpc import SupervisorRpc

log = logging.getLogger(__name__)

SUPERVISORD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""The only variable supervisord (hence every program) inherits: a scrubbed, usable PATH."""
SOCKET_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL
SHUTDOWN_TIMEOUT = 120.0
"""How long a supervisord may take to exit: it stops its groups one after the other."""


def start(paths: SupervisorPaths, rpc: SupervisorRpc, python: str, timeout: float) -> None:
    """Launch supervisord (it is not RUNNING) and wait until it is.

    A supervisord of ours that is still shutting down (after `supervisorctl shutdown`,
    while it stops its programs) holds the socket and refuses calls: wait until it is
    gone rather than fail to launch a second one beside it.
    """
    previous = previous_daemon(paths)
    if previous is not None:
        log.info("waiting for the previous supervisord (pid %d) to exit", previous.pid)
        try:
            previous.wait(SHUTDOWN_TIMEOUT)
        except psutil.TimeoutExpired:
            raise SupervisorError(
                f"supervisord (pid {previous.pid}) neither answers on {paths.socket} "
                f"nor exits; see {paths.log}"
            ) from None
    try:
        launch(paths, python)
    except SupervisorError:
        if rpc.state() != "RUNNING":  # else another run launched it at the same time
            raise
    deadline = time.monotonic() + timeout
    delay = 0.02
    while (state := rpc.state()) != "RUNNING":
        if time.monotonic() > deadline:
            raise SupervisorError(
                f"supervisord did not become RUNNING within {timeout:g} s "
                f"(state {state}); see {paths.log}"
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def previous_daemon(paths: SupervisorPaths) -> psutil.Process | None:
    """The live supervisord that our pid file names, if any (a stale file names none)."""
    try:
        process = psutil.Process(int(paths.pid_file.read_text().strip()))
        command = process.cmdline()
    except (OSError, ValueError, psutil.Error):
        return None
    return process if str(paths.conf) in command else None


def launch(paths: SupervisorPaths, python: str) -> None:
    """Fork supervisord; its parent exits at once, with the reason when it cannot start."""
    if not paths.conf.is_file():
        raise SupervisorError(f"{paths.conf} does not exist; write it first")
    if len(str(paths.socket).encode()) > SOCKET_PATH_MAX:
        raise SupervisorError(f"socket path too long for a unix socket: {paths.socket}")
    argv = [python, "-m", "supervisor.supervisord", "-c", str(paths.conf)]
    try:
        done = subprocess.run(
            argv,
            cwd=paths.instance_root,
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


def shutdown(rpc: SupervisorRpc, timeout: float = SHUTDOWN_TIMEOUT) -> None:
    """Stop every program and supervisord itself; wait until it is gone."""
    if rpc.state() is None:
        return
    try:
        process = psutil.Process(rpc.call("getPID"))
        rpc.call("shutdown")
    except (SupervisorError, psutil.NoSuchProcess):
        return
    try:
        process.wait(timeout)
    except psutil.TimeoutExpired:
        raise SupervisorError(
            f"supervisord (pid {process.pid}) did not stop within {timeout:g} s"
        ) from None
