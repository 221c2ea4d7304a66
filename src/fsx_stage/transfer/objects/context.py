"""What one process needs to move objects: the store, limits, options and a reporter."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from fsx_stage.transfer.errors import RetryPolicy
from fsx_stage.transfer.local.posixmeta import PosixMeta
from fsx_stage.transfer.models import GiB, MiB, TransferEvent, TransferOptions
from fsx_stage.transfer.s3.store import ObjectStore

#: Moving one object: its event kind, and the bytes moved.
MoveResult = tuple[Literal["done", "skipped"], int]

MAX_PARTS = 10_000
MIN_PART = 8 * MiB
MAX_PART = 5 * GiB


@dataclass(slots=True)
class ObjectTransfer:
    """One object to move. ``rel`` is the path below the local root (``/``-separated).

    A ``rel`` ending in ``/`` is a directory marker. ``size``/``etag``/``mtime_ns`` come
    from the listing or the local walk when known (-1 / None otherwise).
    """

    key: str
    rel: str
    size: int = -1
    etag: str | None = None
    mtime_ns: int | None = None


class ByteBudget:
    """Bounds the bytes held in memory at once (upload parts read ahead of sending)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._cond = asyncio.Condition()

    async def acquire(self, amount: int) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.used == 0 or self.used + amount <= self.limit)
            self.used += amount

    async def release(self, amount: int) -> None:
        async with self._cond:
            self.used -= amount
            self._cond.notify_all()


@dataclass
class Context:
    store: ObjectStore
    options: TransferOptions
    retry: RetryPolicy
    report: Callable[[TransferEvent], None]
    umask: int
    local_root: str
    #: (marker key, directory path parts, metadata) of the directory markers downloaded,
    #: applied once every file is written (see ``download.apply_directory_metadata``).
    directory_meta: list[tuple[str, list[str], PosixMeta]] = field(default_factory=list)
    requests: asyncio.Semaphore = field(init=False)
    budget: ByteBudget = field(init=False)

    def __post_init__(self) -> None:
        self.requests = asyncio.Semaphore(self.options.concurrency)
        self.budget = ByteBudget(max(64 * MiB, 2 * self.part_size_for(0)))

    def part_size_for(self, size: int) -> int:
        """Upload part / download range size: fixed if asked, else adapted to ``size``."""
        floor = self.options.part_size or MIN_PART
        needed = math.ceil(size / MAX_PARTS) if size else 0
        needed = math.ceil(needed / MiB) * MiB
        return min(MAX_PART, max(floor, needed))

    def range_size_for(self, size: int) -> int:
        if self.options.part_size:
            return self.part_size_for(size)
        spread = math.ceil(size / max(1, self.options.concurrency) / MiB) * MiB
        return max(self.part_size_for(size), min(spread, 64 * MiB))
