"""A power cut, as the node agent sees one: supervisord and everything it ran die at once
(SIGKILL, nothing stops cleanly), while every file on disk stays as it was."""

from __future__ import annotations

import signal

import psutil

from slapgrid.node.supervisor.control import Supervisor


def power_cut(supervisor: Supervisor, timeout: float = 15.0) -> int:
    """Kill supervisord and its whole process tree; how many processes died."""
    daemon = psutil.Process(supervisor.rpc.call("getPID"))
    victims = [daemon, *daemon.children(recursive=True)]
    for process in victims:
        process.send_signal(signal.SIGKILL)
    _, alive = psutil.wait_procs(victims, timeout=timeout)
    if alive or supervisor.state() is not None:
        raise AssertionError(f"still alive after SIGKILL: {alive}")
    return len(victims)
