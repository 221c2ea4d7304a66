"""Waiting for something the test bed does in its own time (a job state, a file, a count)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    message: str | Callable[[], str],
    interval: float = 0.2,
) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns something true,
    and return that; after ``timeout`` seconds fail with ``message`` (a callable is only
    called then, e.g. to show the job as Slurm sees it at that moment)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"not within {timeout:g} s: {text}")
        time.sleep(interval)
