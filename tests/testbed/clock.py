"""A clock the test holds: time moves only when the test (or a ``sleep``) moves it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FakeClock:
    """Implements `fsx_stage.clock.Clock`; ``monotonic`` moves with ``now``."""

    wall: float = 1_000_000.0

    def now(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.wall

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self.wall += seconds
