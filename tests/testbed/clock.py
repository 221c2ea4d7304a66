"""A clock the test holds: time moves only when the test moves it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FakeClock:
    """Implements `fsx_stage.clock.Clock`."""

    wall: float = 1_000_000.0

    def now(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.wall += seconds
