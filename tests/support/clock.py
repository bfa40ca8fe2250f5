"""A fake clock: decisions driven by time are tested from T0 on, without waiting."""

from __future__ import annotations

T0 = 1_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now
