"""Worker processes: each runs its own uvloop loop and client, fed batches of objects by
the parent over a pipe and sending back batches of events.

The parent lists and moves objects itself; a worker gets the objects the parent has no
room for, and sets up its S3 client only when its first objects arrive (a transfer of a
few objects never pays for it).

``python -m fsx_stage.transfer.run.workers FD`` starts a worker afresh (when the caller has
threads and forking is unsafe); it gets ``(route, options, s3)`` over the pipe first.
"""

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
from multiprocessing.connection import Connection
from typing import Any

import uvloop

from fsx_stage.transfer.models import S3Settings, TransferEvent, TransferOptions
from fsx_stage.transfer.objects.context import ObjectTransfer
from fsx_stage.transfer.objects.download import apply_directory_metadata
from fsx_stage.transfer.objects.routes import Route
from fsx_stage.transfer.run.mover import (
    Mover,
    SummaryCollector,
    items_to_transfer,
    open_root,
    process_context,
)

EventTuple = tuple[str, str, int, int, str, str]
_FINAL = ("done", "skipped", "failed")
_BATCH = 32


def _worker_main(conn: Connection, route: Route, options: TransferOptions, s3: S3Settings) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    asyncio.events._set_running_loop(None)  # a forked child must not see the parent's loop
    uvloop.run(_worker_async(conn, route, options, s3))


def _forked_main(
    parent_end: Connection,
    conn: Connection,
    route: Route,
    options: TransferOptions,
    s3: S3Settings,
) -> None:
    # A forked child inherits the parent's end of its own pipe: close it, or the pipe
    # never reports EOF when the parent dies (kill -9) and the worker waits forever.
    parent_end.close()
    _worker_main(conn, route, options, s3)


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

    async def consume() -> None:
        message = await inbox.get()
        if message[0] != "items":
            return  # the parent moved everything itself: no client to set up
        async with process_context(route, options, s3, report) as ctx:
            root_fd = open_root(route)
            mover = Mover(ctx, root_fd, route.direction)
            try:
                while message[0] == "items":
                    for key, rel, size, etag, mtime_ns in message[1]:
                        await mover.submit(ObjectTransfer(key, rel, size, etag, mtime_ns))
                    message = await inbox.get()
                await mover.drain()  # "end"
            except asyncio.CancelledError:
                mover.cancel()
                await asyncio.gather(*list(mover.tasks), return_exceptions=True)
                raise
            finally:
                os.close(root_fd)

    loop.add_reader(conn.fileno(), readable)
    ticker = asyncio.create_task(flusher())
    work = asyncio.create_task(consume())
    with contextlib.suppress(asyncio.CancelledError):
        await work
    ticker.cancel()
    with contextlib.suppress(Exception):
        loop.remove_reader(conn.fileno())
    with contextlib.suppress(OSError):
        flush()
        conn.send([("exit", "", 0, 0, "", "")])


def _fork_is_safe() -> bool:
    """No other thread runs: neither a Python one nor the AWS CRT's native event loop
    threads (started with its S3 client, which ``awscrt.s3`` is imported for)."""
    return threading.active_count() == 1 and "awscrt.s3" not in sys.modules


class _Process:
    """A worker process: forked when this process has a single thread (cheap, nothing
    to re-import), else a fresh ``python -m fsx_stage.transfer.worker`` that gets its
    configuration over the pipe (safe with threads, independent of ``__main__``)."""

    def __init__(self, route: Route, options: TransferOptions, s3: S3Settings) -> None:
        parent_end, child_end = multiprocessing.Pipe(duplex=True)
        self.conn = parent_end
        self._forked: multiprocessing.process.BaseProcess | None = None
        self._spawned: subprocess.Popen[bytes] | None = None
        if _fork_is_safe():
            self._forked = multiprocessing.get_context("fork").Process(
                target=_forked_main, args=(parent_end, child_end, route, options, s3), daemon=True
            )
            self._forked.start()
        else:
            self._spawned = subprocess.Popen(
                [sys.executable, "-m", "fsx_stage.transfer.run.workers", str(child_end.fileno())],
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
            self.conn.send(("items", self.batch))
            self.batch = []


async def run_workers(
    route: Route, options: TransferOptions, s3: S3Settings, collector: SummaryCollector, count: int
) -> None:
    loop = asyncio.get_running_loop()
    credit_per_worker = max(2 * options.concurrency, _BATCH * 2)
    workers: list[_Worker] = []
    credit = asyncio.Event()
    for _ in range(count - 1):  # this process moves objects too
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
            collector.add(
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
            collector.add(TransferEvent(kind, key, moved, total, reason, category))
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
        async with process_context(route, options, s3, collector.add) as ctx:
            root_fd = open_root(route)
            local = Mover(ctx, root_fd, route.direction, on_free=credit.set)
            try:
                async for item in items_to_transfer(ctx, route, collector.add):
                    if collector.on_event is not None:
                        collector.add(TransferEvent("queued", item.key, 0, item.size))
                    if item.rel.endswith("/"):  # a marker: its metadata is applied here at the end
                        await local.submit(item)
                        continue
                    best: _Worker | None = None
                    while not local.has_room():
                        alive = [w for w in workers if not w.exited.is_set()]
                        best = max(alive, key=lambda w: w.credits) if alive else None
                        if best is not None and best.credits > 0:
                            break
                        best = None
                        credit.clear()
                        await credit.wait()
                    if best is None:
                        await local.submit(item)
                        continue
                    best.credits -= 1
                    best.pending[item.key] = item.size
                    best.batch.append((item.key, item.rel, item.size, item.etag, item.mtime_ns))
                    if len(best.batch) >= _BATCH:
                        best.flush()
                if collector.on_event is not None:
                    collector.add(TransferEvent("listed", ""))
                ticker.cancel()
                for worker in workers:
                    if not worker.exited.is_set():
                        worker.flush()
                        worker.conn.send(("end",))
                await local.drain()
                for worker in workers:
                    await worker.exited.wait()
                apply_directory_metadata(ctx, root_fd)
            except BaseException:
                local.cancel()  # before root_fd closes under its tasks
                await asyncio.gather(*list(local.tasks), return_exceptions=True)
                raise
            finally:
                os.close(root_fd)
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


def main(argv: list[str]) -> int:
    conn = Connection(int(argv[1]))
    route, options, s3 = conn.recv()
    _worker_main(conn, route, options, s3)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
