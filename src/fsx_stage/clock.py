"""The clock code that decides by time is given (the system's by default), so tests can
hold or advance time instead of patching the ``time`` module."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (timestamps kept in state files and manifests)."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


SYSTEM_CLOCK: Clock = SystemClock()
