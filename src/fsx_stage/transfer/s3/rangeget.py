"""Ranged GETs of a large object on threads, each over its own blocking connection.

An event loop moves a large body slowly: every read of the socket is a callback and a
new bytes object, and every write a thread hop. Here a thread receives a range straight
into a reusable buffer and ``pwrite``s it to its offset (and feeds the range's digest):
all three release the GIL, so the ranges of one object keep both the network and the
page cache busy with little Python in between. Requests are signed on the event loop
(:class:`~fsx_stage.transfer.s3.direct_client.FastS3`); only socket and file work runs here.
A cancelled range shuts its socket down and is waited for, so no thread writes to a
file descriptor after its owner closed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import socket
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

from fsx_stage.transfer.errors import TransferError
from fsx_stage.transfer.s3.checksums import Digest
from fsx_stage.transfer.s3.http1 import Endpoint

BUFFER = 1024 * 1024  # per thread: one receive, one pwrite
_PROGRESS_STEP = 8 * 1024 * 1024
_ERROR_BODY_LIMIT = 64 * 1024


class _Stop(Exception):
    """The range was cancelled."""


class _Range:
    """One range in flight: the signed request, where its bytes go, and what the loop
    needs to stop its thread."""

    def __init__(
        self,
        target: str,
        headers: Mapping[str, str],
        fd: int,
        first: int,
        last: int,
        digest: Digest | None,
        report: Callable[[int], None],
    ) -> None:
        self.target, self.headers = target, dict(headers)
        self.fd, self.first, self.last = fd, first, last
        self.digest, self.report = digest, report
        self.stopped = False
        self.sock: socket.socket | None = None

    def failure(self, exc: http.client.HTTPException | OSError) -> Exception:
        """What a socket error means: the range was stopped, or the network failed."""
        if self.stopped:
            return _Stop()
        return TransferError(f"{type(exc).__name__}: {exc}", "network")

    def stop(self) -> None:
        self.stopped = True
        sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _meet(barrier: threading.Barrier) -> None:
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait()


class ThreadedRanges:
    """A pool of threads, each keeping one keep-alive connection to the S3 endpoint."""

    def __init__(
        self,
        endpoint: Endpoint,
        threads: int,
        error: Callable[[int, str, bytes, str], Exception],
    ) -> None:
        self._endpoint = endpoint
        self._error = error
        self._threads = threads
        self._warm = False
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="fsx-range")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[http.client.HTTPConnection] = []

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for conn in self._connections:
            conn.close()

    async def get(
        self,
        target: str,
        headers: Mapping[str, str],
        fd: int,
        first: int,
        last: int,
        digest: Digest | None,
        progress: Callable[[int], None],
    ) -> None:
        """GET ``target`` (path and query, signed ``headers``) into ``fd`` at ``first``."""
        if not self._warm:
            self._start_threads()
        loop = asyncio.get_running_loop()

        def report(amount: int) -> None:
            loop.call_soon_threadsafe(progress, amount)

        state = _Range(target, headers, fd, first, last, digest, report)
        future = loop.run_in_executor(self._pool, self._fetch, state)
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            state.stop()
            with contextlib.suppress(BaseException):
                await future  # the thread no longer touches fd once this returns
            raise

    def _start_threads(self) -> None:
        """Start every thread before the first range: ``Thread.start()`` waits until the
        new thread runs, which takes ~1 ms per thread on an idle process but ~12 ms once
        other threads are receiving (0.2 s for 16 on 2 cores), and the event loop, which
        hands out the ranges, would wait that long."""
        self._warm = True
        barrier = threading.Barrier(self._threads + 1, timeout=5)
        for _ in range(self._threads):
            self._pool.submit(_meet, barrier)
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            end = self._endpoint
            if end.tls is not None:
                conn = http.client.HTTPSConnection(
                    end.host, end.port, timeout=end.connect_s, context=end.tls
                )
            else:
                conn = http.client.HTTPConnection(end.host, end.port, timeout=end.connect_s)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        if conn.sock is None:
            conn.connect()
            assert conn.sock is not None
            conn.sock.settimeout(self._endpoint.read_s)
        return conn

    def _drop(self) -> None:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            with self._lock:
                self._connections.remove(conn)
        self._local.conn = None

    def _fetch(self, state: _Range) -> None:
        try:
            self._receive(state)
        except BaseException:
            self._drop()  # a connection in an unknown state is never reused
            raise

    def _receive(self, state: _Range) -> None:
        if state.stopped:
            raise _Stop
        first, last = state.first, state.last
        fd, digest, report = state.fd, state.digest, state.report  # locals in the hot loop
        want = last + 1 - first
        try:
            response = self._request(state)
            if response.status >= 300:
                raw = response.read(_ERROR_BODY_LIMIT)
                raise self._error(response.status, response.reason, raw, "GetObject")
            span = response.getheader("Content-Range") or f"bytes {first}-{last}/"
            if response.status != 206 or response.length not in (want, None):
                raise TransferError(f"unexpected reply to a ranged GET: {span!r}", "network")
            if not span.startswith(f"bytes {first}-{last}/"):
                raise TransferError(f"unexpected range in the reply: {span!r}", "network")
        except (http.client.HTTPException, OSError) as exc:
            raise state.failure(exc) from None
        buffer = bytearray(min(BUFFER, want))
        view = memoryview(buffer)
        offset = reported = first
        end = last + 1
        while offset < end:
            if state.stopped:
                raise _Stop
            try:
                got = response.readinto(view[: min(len(view), end - offset)])
            except (http.client.HTTPException, OSError) as exc:
                raise state.failure(exc) from None
            if not got:
                raise TransferError(f"truncated body: {offset - first} of {want} bytes", "network")
            chunk = view[:got]
            written = 0
            while written < got:
                written += os.pwrite(fd, chunk[written:], offset + written)
            if digest is not None:
                digest.update(chunk)
            offset += got
            if offset - reported >= _PROGRESS_STEP or offset == end:
                report(offset - reported)
                reported = offset
        if response.length is None and response.read(1):  # a chunked reply ran over
            raise TransferError(f"range overrun: more than {want} bytes", "network")

    def _request(self, state: _Range) -> http.client.HTTPResponse:
        """Send the request; a kept-alive connection the server has closed meanwhile is
        replaced once, silently, as long as nothing of the reply has arrived."""
        kept: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        reused = kept is not None and kept.sock is not None
        while True:
            conn = self._connection()
            state.sock = conn.sock
            try:
                conn.putrequest("GET", state.target, skip_host=True, skip_accept_encoding=True)
                for name, value in state.headers.items():
                    conn.putheader(name, value)
                conn.endheaders()
                return conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                if not reused or state.stopped:
                    raise
                reused = False
                self._drop()
