"""`slapgrid node` from the command line: the agent, under a live status line on a terminal."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from slapgrid.exit_status import ExitStatus
from slapgrid.node.config import NodeConfig
from slapgrid.node.daemon.loop import Daemon
from slapgrid.slap.client import SlapClient


def serve(
    load: Callable[[], NodeConfig],
    connect: Callable[[NodeConfig], SlapClient],
    *,
    now: bool = False,
    progress: bool | None = None,
) -> ExitStatus:
    """Run the agent until stopped; `progress` (None: when stderr is a terminal) adds the line."""
    daemon = Daemon(load, connect, now=now)
    if not (progress if progress is not None else sys.stderr.isatty()):
        return daemon.run()
    from slapgrid.cli.render import summary_line  # rich: only for a terminal

    with TerminalView(lambda: summary_line(daemon.status(), time.time())):
        return daemon.run()


class TerminalView:
    """A live line at the bottom of the terminal; log lines scroll above it."""

    def __init__(self, render: Callable[[], str]) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.spinner import Spinner

        self._spinner = Spinner("dots")
        self._render = render
        self._live = Live(
            get_renderable=self._renderable,
            console=Console(stderr=True),
            transient=True,
            redirect_stderr=True,
            refresh_per_second=4,
        )
        self._streams: list[tuple[logging.StreamHandler[Any], Any]] = []

    def _renderable(self) -> Any:
        self._spinner.update(text=self._render())
        return self._spinner

    def __enter__(self) -> TerminalView:
        original = sys.stderr
        self._live.start()
        for handler in logging.getLogger().handlers:  # log through the live display
            if isinstance(handler, logging.StreamHandler) and handler.stream is original:
                self._streams.append((handler, handler.setStream(sys.stderr)))
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handler, stream in self._streams:
            handler.setStream(stream)
        self._live.stop()
