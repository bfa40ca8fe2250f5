"""What a promise concluded, as typed values, each with its one JSON form.

* `Verdict` crosses the process boundary: the plugin runner prints it as one JSON line and
  the engine reads it back (legacy promises build it directly).
* `PromiseResult` is what the engine records in `P/.slapgrid/promise/result/<title>.status.json`
  with the reference's field names, so monitoring tools read it.

Standard library only: the plugin runner imports this module in every promise process.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

TEST, ANOMALY = "test", "anomaly"
MODES = (TEST, ANOMALY)
DEFAULT_PERIODICITY = 2.0  # minutes
RESULT_TYPES = {TEST: "Test Result", ANOMALY: "Anomaly Result"}
MESSAGE_LIMIT = 5000
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S+0000"


class Run(NamedTuple):
    """What one check sensed: failed when it logged at ERROR or above (or exited non-zero)."""

    failed: bool
    message: str | None
    date: str


@dataclass(frozen=True)
class Verdict:
    """One run of a promise: what it sensed, whether it failed, and what it says of itself.

    `ran` is False when the promise does not take part in the mode. `modes`, `periodicity`
    and `bang_on_failure` are None when the promise did not say (legacy promises never do,
    a plugin that failed to load only gives its modes): the engine keeps what it knew.
    """

    failed: bool
    message: str | None
    sensed: Run | None
    ran: bool = True
    modes: tuple[str, ...] | None = None
    periodicity: float | None = None
    bang_on_failure: bool | None = None

    @classmethod
    def error(cls, message: str, date: str, **said: Any) -> Verdict:
        """A promise that could not be checked is a failed one, with why as its message."""
        return cls(True, message, Run(True, message, date), **said)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"ran": self.ran, "failed": self.failed, "message": self.message}
        if self.sensed is not None:
            data["sensed"] = list(self.sensed)
        if self.modes is not None:
            data["modes"] = list(self.modes)
        if self.periodicity is not None:
            data["periodicity"] = self.periodicity
        if self.bang_on_failure is not None:
            data["bang_on_failure"] = self.bang_on_failure
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Verdict:
        sensed = data.get("sensed")
        modes = data.get("modes")
        periodicity = data.get("periodicity")
        bang = data.get("bang_on_failure")
        return cls(
            failed=bool(data.get("failed", True)),
            message=None if data.get("message") is None else str(data["message"]),
            sensed=Run(bool(sensed[0]), sensed[1], str(sensed[2])) if sensed else None,
            ran=bool(data.get("ran", True)),
            modes=tuple(str(mode) for mode in modes) if modes else None,
            periodicity=float(periodicity) if periodicity else None,
            bang_on_failure=None if bang is None else bool(bang),
        )


@dataclass(frozen=True)
class PromiseResult:
    """One promise's recorded result; `reused` when periodicity kept it from running now."""

    title: str
    name: str
    path: str
    execution_time: float
    type: str
    failed: bool
    date: str
    message: str | None
    reused: bool = False
    bang: bool = False
    tolerated: bool = False  # this run failed, but the promise's verdict does not yet

    @classmethod
    def failure(cls, title: str, name: str, path: str, mode: str, message: str) -> PromiseResult:
        """A promise that could not even be run is a failed one, with why as its message."""
        return cls(
            title=title,
            name=name,
            path=path,
            execution_time=0.0,
            type=RESULT_TYPES[mode],
            failed=True,
            date=format_date(time.time()),
            message=message,
        )

    @property
    def at(self) -> float | None:
        """When the promise ran (epoch seconds); None for a date in another format."""
        try:
            return float(calendar.timegm(time.strptime(self.date, DATE_FORMAT)))
        except ValueError:
            return None

    def age(self, now: float) -> float | None:
        at = self.at
        return None if at is None else max(now - at, 0.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "name": self.name,
            "path": self.path,
            "execution-time": self.execution_time,
            "result": {
                "type": self.type,
                "failed": self.failed,
                "date": self.date,
                "message": self.message,
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PromiseResult:
        result = data["result"]
        return cls(
            title=str(data["title"]),
            name=str(data["name"]),
            path=str(data["path"]),
            execution_time=float(data.get("execution-time", 0.0)),
            type=str(result["type"]),
            failed=bool(result["failed"]),
            date=str(result["date"]),
            message=None if result.get("message") is None else str(result["message"]),
        )


@dataclass(frozen=True)
class PromiseReport:
    """The results of one run, plugins first, each group in directory order."""

    results: tuple[PromiseResult, ...] = ()

    @property
    def failures(self) -> tuple[PromiseResult, ...]:
        return tuple(result for result in self.results if result.failed)

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    @property
    def error_message(self) -> str | None:
        """`Promise '<name>' failed with output: …` for the first failure, else None."""
        if not self.failures:
            return None
        first = self.failures[0]
        return f"Promise '{first.name}' failed with output: {first.message or ''}"

    @property
    def bang_message(self) -> str | None:
        """What to bang with when a failing anomaly check allows it (first one only)."""
        for result in self.failures:
            if result.bang:
                return f"Promise {result.title} is failing"
        return None


def truncate(message: str | None) -> str | None:
    if message is None or len(message) <= MESSAGE_LIMIT:
        return message
    return "..." + message[-MESSAGE_LIMIT:]


def format_date(epoch: float) -> str:
    return time.strftime(DATE_FORMAT, time.gmtime(epoch))
