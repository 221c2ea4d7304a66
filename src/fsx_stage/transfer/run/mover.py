"""Moving objects in one process: the summary of events, the mover, and what to transfer."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

from fsx_stage.direction import Direction
from fsx_stage.filters import selects
from fsx_stage.transfer.errors import RetryPolicy, classify
from fsx_stage.transfer.local import posixmeta, safefs
from fsx_stage.transfer.models import (
    EventKind,
    FailureCategory,
    S3Settings,
    TransferEvent,
    TransferFailure,
    TransferOptions,
    TransferSummary,
)
from fsx_stage.transfer.objects import deletion, download, dryrun, upload
from fsx_stage.transfer.objects.context import Context, ObjectTransfer
from fsx_stage.transfer.objects.routes import Route
from fsx_stage.transfer.objects.sources import list_objects, walk_tree
from fsx_stage.transfer.s3.choose import open_store


class SummaryCollector:
    """Folds events into the summary and forwards them to the caller."""

    def __init__(self, on_event: Callable[[TransferEvent], None] | None) -> None:
        self.summary = TransferSummary()
        self.on_event = on_event

    def add(self, event: TransferEvent) -> None:
        summary = self.summary
        if event.kind == "done":
            summary.objects_done += 1
            summary.bytes_done += event.bytes
        elif event.kind == "skipped":
            summary.objects_skipped += 1
        elif event.kind == "deleted":
            summary.objects_deleted += 1
        elif event.kind == "failed":
            summary.failures.append(
                TransferFailure(
                    key=event.key,
                    reason=event.reason,
                    category=cast(FailureCategory, event.category),  # set by classify()
                )
            )
        if self.on_event is not None:
            self.on_event(event)


class Mover:
    """Moves objects in this process, at most ``concurrency`` at a time."""

    def __init__(
        self,
        ctx: Context,
        root_fd: int,
        direction: Direction,
        on_free: Callable[[], None] | None = None,
    ) -> None:
        self.ctx = ctx
        self.root_fd = root_fd
        self.move: Callable[[Context, int, ObjectTransfer], Awaitable[tuple[EventKind, int]]]
        if ctx.options.dryrun:
            self.move = (
                dryrun.plan_download if direction is Direction.DOWNLOAD else dryrun.plan_upload
            )
        else:
            self.move = download.download if direction is Direction.DOWNLOAD else upload.upload
        self.slots = asyncio.Semaphore(ctx.options.concurrency)
        self.tasks: set[asyncio.Task[None]] = set()
        self.on_free = on_free  # called whenever a slot frees up

    def has_room(self) -> bool:
        """Whether :meth:`submit` would start the next object at once."""
        return not self.slots.locked()

    async def one(self, item: ObjectTransfer) -> None:
        try:
            kind, moved = await self.move(self.ctx, self.root_fd, item)
            self.ctx.report(
                TransferEvent(kind, item.key, moved, item.size if item.size >= 0 else moved)
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            category, reason = classify(exc)
            self.ctx.report(TransferEvent("failed", item.key, 0, item.size, reason, category))
        finally:
            self.slots.release()
            if self.on_free is not None:
                self.on_free()

    async def submit(self, item: ObjectTransfer) -> None:
        await self.slots.acquire()
        task = asyncio.create_task(self.one(item))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def drain(self) -> None:
        while self.tasks:
            await asyncio.gather(*list(self.tasks))

    def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()


async def items_to_transfer(
    ctx: Context, route: Route, report: Callable[[TransferEvent], None]
) -> AsyncIterator[ObjectTransfer]:
    if route.named:
        for item in route.named:
            yield item
        return
    filters = ctx.options.filters

    def keep(relative: str) -> bool:
        return selects(relative, filters)

    if route.direction is Direction.DOWNLOAD:
        listing = list_objects(ctx.store, route.prefix, ctx.retry, keep)
        async for item in listing:
            yield item
    else:

        def unreadable(key: str, exc: Exception) -> None:
            category, reason = classify(exc)
            report(TransferEvent("failed", key, 0, -1, reason, category))

        walk = walk_tree(route.local_root, route.prefix, keep, unreadable)
        for count, item in enumerate(walk):
            yield item
            if count % 256 == 255:
                await asyncio.sleep(0)


def pool_size(options: TransferOptions) -> int:
    return options.concurrency + 4


@contextlib.asynccontextmanager
async def process_context(
    route: Route, options: TransferOptions, s3: S3Settings, report: Callable[[TransferEvent], None]
) -> AsyncIterator[Context]:
    async with open_store(
        s3, route.bucket, options.encryption, pool_size(options), listing=not route.named
    ) as store:
        yield Context(
            store=store,
            options=options,
            retry=RetryPolicy(s3.max_attempts),
            report=report,
            umask=posixmeta.current_umask(),
            local_root=route.local_root,
        )


def open_root(route: Route, dry: bool = False) -> int:
    """The destination root's fd; -1 for a dry run whose download root does not exist."""
    if dry and route.direction is Direction.DOWNLOAD:
        try:
            return safefs.open_root(route.local_root, create=False)
        except FileNotFoundError:
            return -1
    return safefs.open_root(route.local_root, create=route.direction is Direction.DOWNLOAD)


async def run_here(
    route: Route, options: TransferOptions, s3: S3Settings, collector: SummaryCollector
) -> None:
    async with process_context(route, options, s3, collector.add) as ctx:
        root_fd = open_root(route, options.dryrun)
        mover = Mover(ctx, root_fd, route.direction)
        try:
            seen: set[str] | None = set() if options.delete and not route.named else None
            async for item in items_to_transfer(ctx, route, collector.add):
                if collector.on_event is not None:
                    collector.add(TransferEvent("queued", item.key, 0, item.size))
                if seen is not None:
                    seen.add(item.rel)
                await mover.submit(item)
            if collector.on_event is not None:
                collector.add(TransferEvent("listed", ""))
            await mover.drain()
            download.apply_directory_metadata(ctx, root_fd)
            if seen is not None:
                await deletion.delete_extra(ctx, route, root_fd, seen)
        except asyncio.CancelledError:
            mover.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*list(mover.tasks), return_exceptions=True)
            raise
        finally:
            if root_fd >= 0:
                os.close(root_fd)
