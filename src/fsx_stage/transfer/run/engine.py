"""Running a transfer: resolve SRC/DST, then move the objects here or in worker processes."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

import uvloop

from fsx_stage.direction import Direction
from fsx_stage.transfer.errors import classify
from fsx_stage.transfer.models import (
    S3Settings,
    TransferEvent,
    TransferFailure,
    TransferOptions,
    TransferSummary,
)
from fsx_stage.transfer.objects.routes import Route, TransferUsageError, resolve
from fsx_stage.transfer.run.mover import SummaryCollector, run_here

__all__ = ["TransferUsageError", "resolve", "transfer", "transfer_async"]

P = ParamSpec("P")
R = TypeVar("R")


def _worker_count(route: Route, options: TransferOptions) -> int:
    if len(route.named) == 1 or options.dryrun or options.delete:
        return 1
    if options.workers is not None:
        return options.workers
    # Half the cores: the other half is left to the kernel's network and page-cache work
    # (and, on a test bed, to the S3 server); on 2 cores that means one process (a second
    # one measured no faster there: the machine is CPU-bound with the server on it).
    return max(1, min((os.cpu_count() or 1) // 2, 8))


async def transfer_async(
    src: str | Sequence[str],
    dst: str,
    *,
    recursive: bool,
    options: TransferOptions,
    s3: S3Settings,
    on_event: Callable[[TransferEvent], None] | None = None,
    cancel: threading.Event | None = None,
) -> TransferSummary:
    """Copy SRC to DST (exactly one is ``s3://...``), or several SRC objects (one bucket)
    into the directory DST; failures are listed, not raised."""
    route = resolve(src, dst, recursive)
    collector = SummaryCollector(on_event)
    started = time.monotonic()
    count = _worker_count(route, options)
    if count > 1:
        from fsx_stage.transfer.run.workers import run_workers  # multiprocessing loads only here

        run = asyncio.ensure_future(run_workers(route, options, s3, collector, count))
    else:
        run = asyncio.ensure_future(run_here(route, options, s3, collector))
    watcher = asyncio.ensure_future(_watch(cancel, run)) if cancel is not None else None
    try:
        await run
    except asyncio.CancelledError:
        if cancel is None or not cancel.is_set():
            raise
        collector.summary.cancelled = True
    except Exception as exc:
        category, reason = classify(exc)
        collector.summary.failures.append(
            TransferFailure(
                key=(src if isinstance(src, str) else " ".join(src))
                if route.direction is Direction.DOWNLOAD
                else dst,
                reason=reason,
                category=category,
            )
        )
    finally:
        if watcher is not None:
            watcher.cancel()
    collector.summary.elapsed_s = time.monotonic() - started
    return collector.summary


async def _watch(cancel: threading.Event, run: asyncio.Future[None]) -> None:
    while not cancel.is_set():
        await asyncio.sleep(0.05)
    run.cancel()


def _on_uvloop(function: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, R]:
    """``function`` run to its end on a new uvloop event loop: its parameters, blocking."""

    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return uvloop.run(function(*args, **kwargs))

    run.__doc__ = f"Synchronous :func:`{function.__name__}`, on a uvloop event loop."
    return run


transfer = _on_uvloop(transfer_async)
