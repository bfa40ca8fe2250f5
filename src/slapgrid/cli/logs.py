"""Logging for every command: readable text on a terminal, JSON lines for machines."""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# attributes every LogRecord has; anything else was passed with `extra=` and is structured
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the `extra=` fields (partition, action, reason…)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


@dataclass(frozen=True)
class LogSettings:
    """`-v`, `--log-file` and `--log-format`, as given before and after the subcommand."""

    verbose: int = 0
    log_file: Path | None = None
    log_format: str = "text"

    def then(self, verbose: int, log_file: Path | None, log_format: str | None) -> LogSettings:
        """Options given after the subcommand: `-v` adds up, the others win."""
        return LogSettings(
            self.verbose + verbose, log_file or self.log_file, log_format or self.log_format
        )

    def apply(self) -> None:
        setup_logging(self.verbose, self.log_file, self.log_format)


_OURS = "slapgrid"  # the name of the handlers set up here, closed when replaced


def setup_logging(verbose: int, log_file: Path | None, log_format: str) -> None:
    """Replace the root logger's handlers; called again when options follow the subcommand."""
    formatter: logging.Formatter = (
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        if handler.name == _OURS:
            handler.close()
    for handler in handlers:
        handler.set_name(_OURS)
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose > 0 else logging.INFO)
    for noisy in ("httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)
