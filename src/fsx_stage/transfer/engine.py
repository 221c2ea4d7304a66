"""Running a transfer: resolve SRC/DST, produce jobs, move them in one or more processes."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

import uvloop

from fsx_stage.s3url import S3Url, is_s3_url
from fsx_stage.transfer import download, posixmeta, safefs, upload
from fsx_stage.transfer.client import create_client
from fsx_stage.transfer.context import Context, Job
from fsx_stage.transfer.errors import RetryPolicy, classify
from fsx_stage.transfer.fastpath import FastS3
from fsx_stage.transfer.models import (
    S3Settings,
    TransferEvent,
    TransferFailure,
    TransferOptions,
    TransferSummary,
)
from fsx_stage.transfer.sources import PathFilter, list_objects, walk_tree

Direction = Literal["download", "upload"]
EventTuple = tuple[str, str, int, int, str, str]
_FINAL = ("done", "skipped", "failed")
_BATCH = 32


class TransferUsageError(ValueError):
    """SRC/DST/options that cannot describe a transfer (the CLI's exit status 2)."""


@dataclass(frozen=True, slots=True)
class Route:
    direction: Direction
    bucket: str
    local_root: str
    single: Job | None  # one object/file; otherwise list ``prefix`` / walk ``local_root``
    prefix: str


def resolve(src: str, dst: str, recursive: bool) -> Route:
    """Work out direction, local root and what to list; raises TransferUsageError."""
    if is_s3_url(src) == is_s3_url(dst):
        raise TransferUsageError("exactly one of SRC and DST must be an s3:// URL")
    if is_s3_url(src):
        url = S3Url.parse(src)
        if recursive:
            prefix = url.key if url.is_prefix else url.key + "/"
            return Route("download", url.bucket, dst, None, prefix)
        if url.is_prefix:
            raise TransferUsageError(f"{src} is a prefix: add --recursive to copy what is under it")
        name = url.key.rsplit("/", 1)[-1]
        if dst.endswith("/") or Path(dst).is_dir():
            return Route("download", url.bucket, dst, Job(url.key, name), "")
        root, _, leaf = dst.rpartition("/")
        return Route(
            "download",
            url.bucket,
            root or ("/" if dst.startswith("/") else "."),
            Job(url.key, leaf),
            "",
        )
    url = S3Url.parse(dst)
    # A missing SRC is not a usage error: it fails the transfer as "not_found".
    if recursive:
        if os.path.lexists(src) and not Path(src).is_dir():
            raise TransferUsageError(f"{src} is not a directory (needed with --recursive)")
        prefix = url.key if url.is_prefix else url.key + "/"
        return Route("upload", url.bucket, src, None, prefix)
    if Path(src).is_dir() and not Path(src).is_symlink():
        raise TransferUsageError(f"{src} is a directory: add --recursive to copy its contents")
    path = src.rstrip("/")
    root, _, name = path.rpartition("/")
    key = url.key + name if url.is_prefix else url.key
    return Route(
        "upload", url.bucket, root or ("/" if path.startswith("/") else "."), Job(key, name), ""
    )


class Tally:
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
        elif event.kind == "failed":
            summary.failures.append(
                TransferFailure(key=event.key, reason=event.reason, category=event.category)
            )
        if self.on_event is not None:
            self.on_event(event)


class Mover:
    """Moves jobs in this process, at most ``concurrency`` at a time."""

    def __init__(self, ctx: Context, root_fd: int, direction: Direction) -> None:
        self.ctx = ctx
        self.root_fd = root_fd
        self.move = download.download if direction == "download" else upload.upload
        self.slots = asyncio.Semaphore(ctx.options.concurrency)
        self.tasks: set[asyncio.Task[None]] = set()

    async def one(self, job: Job) -> None:
        try:
            kind, moved = await self.move(self.ctx, self.root_fd, job)
            self.ctx.report(
                TransferEvent(kind, job.key, moved, job.size if job.size >= 0 else moved)
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            category, reason = classify(exc)
            self.ctx.report(TransferEvent("failed", job.key, 0, job.size, reason, category))
        finally:
            self.slots.release()

    async def submit(self, job: Job) -> None:
        await self.slots.acquire()
        task = asyncio.create_task(self.one(job))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def drain(self) -> None:
        while self.tasks:
            await asyncio.gather(*list(self.tasks))

    def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()


async def _jobs(
    ctx: Context, route: Route, report: Callable[[TransferEvent], None]
) -> AsyncIterator[Job]:
    if route.single is not None:
        yield route.single
        return
    keep = PathFilter(ctx.options.include, ctx.options.exclude)
    if route.direction == "download":
        listing = list_objects(ctx.client, route.bucket, route.prefix, ctx.retry, keep, ctx.fast)
        async for job in listing:
            yield job
    else:

        def unreadable(key: str, exc: Exception) -> None:
            category, reason = classify(exc)
            report(TransferEvent("failed", key, 0, -1, reason, category))

        walk = walk_tree(route.local_root, route.prefix, keep, unreadable)
        for count, job in enumerate(walk):
            yield job
            if count % 256 == 255:
                await asyncio.sleep(0)


def _worker_count(route: Route, options: TransferOptions) -> int:
    if route.single is not None:
        return 1
    if options.workers is not None:
        return options.workers
    # Half the cores: the other half is left to the kernel's network and page-cache work
    # (and, on a test bed, to the S3 server); on 2 cores that means one process.
    return max(1, min((os.cpu_count() or 1) // 2, 8))


def _pool_size(options: TransferOptions) -> int:
    return options.concurrency + 4


@contextlib.asynccontextmanager
async def _context(
    route: Route, options: TransferOptions, s3: S3Settings, report: Callable[[TransferEvent], None]
) -> AsyncIterator[Context]:
    async with create_client(s3, _pool_size(options)) as client:
        fast = await FastS3.attach(
            client, route.bucket, _pool_size(options), s3.connect_timeout_s, s3.read_timeout_s
        )
        try:
            yield Context(
                client=client,
                bucket=route.bucket,
                options=options,
                retry=RetryPolicy(s3.max_attempts),
                report=report,
                umask=posixmeta.current_umask(),
                local_root=route.local_root,
                fast=fast,
            )
        finally:
            if fast is not None:
                await fast.close()


def _open_root(route: Route) -> int:
    return safefs.open_root(route.local_root, create=route.direction == "download")


async def _run_here(route: Route, options: TransferOptions, s3: S3Settings, tally: Tally) -> None:
    async with _context(route, options, s3, tally.add) as ctx:
        root_fd = _open_root(route)
        mover = Mover(ctx, root_fd, route.direction)
        try:
            async for job in _jobs(ctx, route, tally.add):
                if tally.on_event is not None:
                    tally.add(TransferEvent("queued", job.key, 0, job.size))
                await mover.submit(job)
            await mover.drain()
        except asyncio.CancelledError:
            mover.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*list(mover.tasks), return_exceptions=True)
            raise
        finally:
            os.close(root_fd)


# ---- worker processes -------------------------------------------------------------------


def _worker_main(conn: Connection, route: Route, options: TransferOptions, s3: S3Settings) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    asyncio.events._set_running_loop(None)  # a forked child must not see the parent's loop
    uvloop.run(_worker_async(conn, route, options, s3))


async def _worker_async(
    conn: Connection, route: Route, options: TransferOptions, s3: S3Settings
) -> None:
    loop = asyncio.get_running_loop()
    outbox: list[EventTuple] = []
    inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    def report(event: TransferEvent) -> None:
        outbox.append(
            (event.kind, event.key, event.bytes, event.total, event.reason, event.category)
        )
        if len(outbox) >= _BATCH:
            flush()

    def flush() -> None:
        if outbox:
            conn.send(outbox.copy())
            outbox.clear()

    work: asyncio.Task[None] | None = None

    def readable() -> None:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the parent is gone: stop
            loop.remove_reader(conn.fileno())
            message = ("cancel",)
        if message[0] == "cancel":
            if work is not None:
                work.cancel()
        else:
            inbox.put_nowait(message)

    async def flusher() -> None:
        while True:
            await asyncio.sleep(0.05)
            flush()

    loop.add_reader(conn.fileno(), readable)
    ticker = asyncio.create_task(flusher())
    async with _context(route, options, s3, report) as ctx:
        root_fd = _open_root(route)
        mover = Mover(ctx, root_fd, route.direction)

        async def consume() -> None:
            while True:
                message = await inbox.get()
                if message[0] == "jobs":
                    for key, rel, size, etag, mtime_ns in message[1]:
                        await mover.submit(Job(key, rel, size, etag, mtime_ns))
                else:  # "end"
                    await mover.drain()
                    return

        work = asyncio.create_task(consume())
        try:
            await work
        except asyncio.CancelledError:
            mover.cancel()
            await asyncio.gather(*list(mover.tasks), return_exceptions=True)
        finally:
            os.close(root_fd)
    ticker.cancel()
    with contextlib.suppress(Exception):
        loop.remove_reader(conn.fileno())
    with contextlib.suppress(OSError):
        flush()
        conn.send([("exit", "", 0, 0, "", "")])


class _Process:
    """A worker process: forked when this process has a single thread (cheap, nothing
    to re-import), else a fresh ``python -m fsx_stage.transfer.worker`` that gets its
    configuration over the pipe (safe with threads, independent of ``__main__``)."""

    def __init__(self, route: Route, options: TransferOptions, s3: S3Settings) -> None:
        parent_end, child_end = multiprocessing.Pipe(duplex=True)
        self.conn = parent_end
        self._forked: multiprocessing.process.BaseProcess | None = None
        self._spawned: subprocess.Popen[bytes] | None = None
        if threading.active_count() == 1:
            self._forked = multiprocessing.get_context("fork").Process(
                target=_worker_main, args=(child_end, route, options, s3), daemon=True
            )
            self._forked.start()
        else:
            self._spawned = subprocess.Popen(
                [sys.executable, "-m", "fsx_stage.transfer.worker", str(child_end.fileno())],
                pass_fds=(child_end.fileno(),),
                stdin=subprocess.DEVNULL,
            )
            parent_end.send((route, options, s3))
        child_end.close()

    def join(self, timeout: float) -> None:
        if self._forked is not None:
            self._forked.join(timeout)
        elif self._spawned is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._spawned.wait(timeout)

    def kill(self) -> None:
        if self.exitcode is None:
            if self._forked is not None:
                self._forked.kill()
            elif self._spawned is not None:
                self._spawned.kill()
            self.join(2)

    @property
    def exitcode(self) -> int | None:
        if self._forked is not None:
            return self._forked.exitcode
        assert self._spawned is not None
        return self._spawned.poll()


class _Worker:
    def __init__(self, process: _Process, credits: int) -> None:
        self.process = process
        self.conn = process.conn
        self.credits = credits
        self.batch: list[tuple[str, str, int, str | None, int | None]] = []
        self.pending: dict[str, int] = {}  # key -> size, sent and not yet finished
        self.exited = asyncio.Event()

    def flush(self) -> None:
        if self.batch:
            self.conn.send(("jobs", self.batch))
            self.batch = []


async def _run_workers(
    route: Route, options: TransferOptions, s3: S3Settings, tally: Tally, count: int
) -> None:
    loop = asyncio.get_running_loop()
    credit_per_worker = max(2 * options.concurrency, _BATCH * 2)
    workers: list[_Worker] = []
    credit = asyncio.Event()
    for _ in range(count):
        workers.append(_Worker(_Process(route, options, s3), credit_per_worker))

    stopping = False

    def gone(worker: _Worker) -> None:
        """A worker is finished: whatever it still held did not transfer."""
        with contextlib.suppress(Exception):
            loop.remove_reader(worker.conn.fileno())
        worker.exited.set()
        credit.set()
        if stopping:
            worker.pending.clear()  # cancelled: in-flight objects are not failures
        for key, size in worker.pending.items():
            tally.add(
                TransferEvent("failed", key, 0, size, "transfer worker process ended", "other")
            )
        worker.pending.clear()

    def on_readable(worker: _Worker) -> None:
        try:
            events = worker.conn.recv()
        except (EOFError, OSError):
            gone(worker)
            return
        for kind, key, moved, total, reason, category in events:
            if kind == "exit":
                gone(worker)
                continue
            tally.add(TransferEvent(kind, key, moved, total, reason, category))
            if kind in _FINAL:
                worker.credits += 1
                worker.pending.pop(key, None)
        credit.set()

    for worker in workers:
        loop.add_reader(worker.conn.fileno(), on_readable, worker)

    async def flusher() -> None:
        while True:
            await asyncio.sleep(0.02)
            for worker in workers:
                worker.flush()

    ticker = asyncio.create_task(flusher())
    try:
        async with _context(route, options, s3, tally.add) as ctx:
            async for job in _jobs(ctx, route, tally.add):
                if tally.on_event is not None:
                    tally.add(TransferEvent("queued", job.key, 0, job.size))
                while True:
                    alive = [w for w in workers if not w.exited.is_set()]
                    if not alive:
                        raise RuntimeError("all transfer worker processes died")
                    best = max(alive, key=lambda w: w.credits)
                    if best.credits > 0:
                        break
                    credit.clear()
                    await credit.wait()
                best.credits -= 1
                best.pending[job.key] = job.size
                best.batch.append((job.key, job.rel, job.size, job.etag, job.mtime_ns))
                if len(best.batch) >= _BATCH:
                    best.flush()
        ticker.cancel()
        for worker in workers:
            if not worker.exited.is_set():
                worker.flush()
                worker.conn.send(("end",))
        for worker in workers:
            await worker.exited.wait()
    except BaseException:
        stopping = True
        ticker.cancel()
        for worker in workers:
            with contextlib.suppress(OSError):
                worker.conn.send(("cancel",))
        deadline = time.monotonic() + 3
        for worker in workers:
            while not worker.exited.is_set() and time.monotonic() < deadline:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(worker.exited.wait()), 0.1)
        raise
    finally:
        for worker in workers:
            with contextlib.suppress(Exception):
                loop.remove_reader(worker.conn.fileno())
            worker.process.join(timeout=2)
            worker.process.kill()
            worker.conn.close()
    lost = [w for w in workers if w.process.exitcode not in (0, None)]
    if lost:
        raise RuntimeError(f"{len(lost)} transfer worker process(es) failed")


# ---- entry points -----------------------------------------------------------------------


async def transfer_async(
    src: str,
    dst: str,
    *,
    recursive: bool,
    options: TransferOptions,
    s3: S3Settings,
    on_event: Callable[[TransferEvent], None] | None = None,
    cancel: threading.Event | None = None,
) -> TransferSummary:
    """Copy SRC to DST (exactly one is ``s3://...``); failures are listed, not raised."""
    route = resolve(src, dst, recursive)
    tally = Tally(on_event)
    started = time.monotonic()
    count = _worker_count(route, options)
    run = asyncio.ensure_future(
        _run_workers(route, options, s3, tally, count)
        if count > 1
        else _run_here(route, options, s3, tally)
    )
    watcher = asyncio.ensure_future(_watch(cancel, run)) if cancel is not None else None
    try:
        await run
    except asyncio.CancelledError:
        if cancel is None or not cancel.is_set():
            raise
        tally.summary.cancelled = True
    except Exception as exc:
        category, reason = classify(exc)
        tally.summary.failures.append(
            TransferFailure(
                key=src if route.direction == "download" else dst, reason=reason, category=category
            )
        )
    finally:
        if watcher is not None:
            watcher.cancel()
    tally.summary.elapsed_s = time.monotonic() - started
    return tally.summary


async def _watch(cancel: threading.Event, run: asyncio.Future[None]) -> None:
    while not cancel.is_set():
        await asyncio.sleep(0.05)
    run.cancel()


def transfer(
    src: str,
    dst: str,
    *,
    recursive: bool,
    options: TransferOptions,
    s3: S3Settings,
    on_event: Callable[[TransferEvent], None] | None = None,
    cancel: threading.Event | None = None,
) -> TransferSummary:
    """Synchronous :func:`transfer_async`, on a uvloop event loop."""
    return uvloop.run(
        transfer_async(
            src, dst, recursive=recursive, options=options, s3=s3, on_event=on_event, cancel=cancel
        )
    )
