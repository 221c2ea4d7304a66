"""One polling loop for the tests: wait until a condition holds, or fail saying why."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T],
    timeout: float,
    explain: Callable[[], object] | str = "",
    interval: float = 0.2,
) -> T:
    """Call ``condition`` every ``interval`` s until it returns a true value, and return it.

    After ``timeout`` s, raise AssertionError with ``explain`` (a callable is called only
    then: e.g. the job's ``scontrol show job`` at the moment it gave up).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = explain() if callable(explain) else explain
            raise AssertionError(f"not true within {timeout:g} s: {detail}")
        time.sleep(interval)
