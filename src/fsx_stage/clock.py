"""The clock code that decides by time is given (the system's by default), so tests can
hold or advance time instead of patching the ``time`` module."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (timestamps kept in state files and manifests)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (durations, deadlines, throttles)."""
        ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


SYSTEM_CLOCK: Clock = SystemClock()
