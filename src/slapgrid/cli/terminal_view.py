"""`slapgrid node` on a terminal: a live status line under the scrolling log."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.spinner import Spinner


class TerminalView:
    """A live line at the bottom of the terminal; log lines scroll above it."""

    def __init__(self, render: Callable[[], str]) -> None:
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
