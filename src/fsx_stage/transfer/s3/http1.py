"""A small HTTP/1.1 client on asyncio protocols: the transport of the fast path.

With many small objects the client's own CPU per request sets the rate, and a general
HTTP library spends most of it on what S3 traffic never needs (cookies, redirects,
proxies, decompression, a stream object per reply). This client does what S3 needs and
no more: one request at a time on each kept-alive connection; the reply head parsed in
one pass; a body framed by Content-Length, chunked, or running to EOF, buffered with
flow control (the socket pauses while a reader falls behind). It imports in a
millisecond, where aiohttp takes about a hundred.

Every failure on the wire is a :class:`TransferError` of category ``"network"`` (the
caller retries it). A connection whose state is in doubt (a failure, a reply cut short,
a body left unread, ``Connection: close``) is closed, never reused; a kept-alive
connection that the server closed while idle is replaced once, silently, as long as no
byte of the reply had arrived.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

from fsx_stage.transfer.errors import TransferError

_MAX_HEAD = 64 * 1024  # a reply head larger than this is not an S3 reply
_HIGH_WATER = 512 * 1024  # body bytes buffered per connection before its socket is paused
_MAX_LINE = 4096  # a chunk-size line


def _network(reason: str) -> TransferError:
    return TransferError(reason, "network")


class _Chunked:
    """Decoder of a ``Transfer-Encoding: chunked`` body (trailers are read and dropped)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._state = "size"  # size | data | crlf | trailer
        self._left = 0
        self.done = False

    def feed(self, data: bytes) -> list[bytes]:
        """The body bytes in ``data``; raises ``ValueError`` on a malformed stream."""
        if self.done:
            raise ValueError("data after the end of a chunked body")
        out: list[bytes] = []
        buffer = self._buffer
        buffer += data
        while buffer:
            if self._state == "data":
                take = min(self._left, len(buffer))
                out.append(bytes(buffer[:take]))
                del buffer[:take]
                self._left -= take
                if not self._left:
                    self._state = "crlf"
                continue
            if self._state == "crlf":
                if len(buffer) < 2:
                    break
                if buffer[:2] != b"\r\n":
                    raise ValueError("a chunk does not end with CRLF")
                del buffer[:2]
                self._state = "size"
                continue
            end = buffer.find(b"\r\n")
            if end < 0:
                if len(buffer) > _MAX_LINE:
                    raise ValueError("chunk-size line too long")
                break
            line = bytes(buffer[:end])
            del buffer[: end + 2]
            if self._state == "size":
                size = int(line.partition(b";")[0].strip() or b"x", 16)
                if size < 0:
                    raise ValueError("negative chunk size")
                self._state, self._left = ("data", size) if size else ("trailer", 0)
            elif not line:  # the empty line after the trailers
                self.done = True
                if buffer:
                    raise ValueError("data after the end of a chunked body")
        return out


def parse_head(head: bytes) -> tuple[int, str, dict[str, str], bool]:
    """Status, reason, headers (lower-case names) and whether the connection may be
    kept alive, from a reply head without its final blank line."""
    lines = head.decode("utf-8", "surrogateescape").split("\r\n")  # values: UTF-8 at most
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise ValueError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    name = ""
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and name:  # an obsolete folded continuation
            headers[name] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise ValueError(f"malformed header line: {line[:80]!r}")
        name = name.lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    tokens = {t.strip() for t in headers.get("connection", "").lower().split(",")}
    keep_alive = "close" not in tokens and (version != "HTTP/1.0" or "keep-alive" in tokens)
    return int(code), reason, headers, keep_alive


class _Connection(asyncio.Protocol):
    """One connection: the protocol callbacks and the state of the request on it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, read_s: float) -> None:
        self._loop = loop
        self._read_s = read_s
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = False
        self.dropped = False  # the server closed it in the middle of a request
        self._waiter: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._reset("GET")

    def _reset(self, method: str) -> None:
        self.method = method
        self.head = bytearray()
        self.status = 0
        self.reason = ""
        self.headers: dict[str, str] = {}
        self.keep_alive = False
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.got_any = False
        self.has_head = False
        self.complete = False
        self.error: Exception | None = None
        self.unbounded = False  # a read-to-the-end: never pause the socket
        self._remaining = -1  # Content-Length still to come; -1: until EOF
        self._chunked: _Chunked | None = None
        self._paused = False

    # -- protocol callbacks --------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.got_any = True
        if self.error is not None:
            return
        try:
            if self.has_head:
                self._body(data)
            else:
                self._head(data)
        except ValueError as exc:
            self._fail(_network(f"malformed reply: {exc}"))

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if self.error is None and not self.complete:
            if self.has_head and self._remaining == -1 and self._chunked is None:
                self.complete = True  # a body delimited by the end of the connection
            elif self.method:
                reason = f"{type(exc).__name__}: {exc}" if exc else "connection closed"
                self.error = _network(f"{reason} before the end of the reply")
                self.dropped = True
        self._wake()
        writable = self._writable
        if writable is not None and not writable.done():
            writable.set_result(None)

    def pause_writing(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    # -- reply parsing ---------------------------------------------------------------
    def _head(self, data: bytes) -> None:
        if self.head:
            self.head += data
            data = bytes(self.head)
        end = data.find(b"\r\n\r\n")
        if end < 0:
            if not self.head:
                self.head += data
            if len(self.head) > _MAX_HEAD:
                raise ValueError("reply head too large")
            return
        self.head = bytearray()
        rest = data[end + 4 :]
        status, reason, headers, keep_alive = parse_head(data[:end])
        if 100 <= status < 200:  # an interim reply (100 Continue): the real one follows
            if rest:
                self._head(rest)
            return
        self.status, self.reason, self.headers = status, reason, headers
        self.keep_alive = keep_alive
        self.has_head = True
        if self.method == "HEAD" or status in (204, 304):
            self._remaining = 0
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._chunked = _Chunked()
        elif "content-length" in headers:
            self._remaining = int(headers["content-length"])
            if self._remaining < 0:
                raise ValueError("negative Content-Length")
        else:
            self.keep_alive = False  # the body runs to the end of the connection
        if self._remaining == 0:
            self.complete = True
        self._wake()
        if rest:
            self._body(rest)

    def _body(self, data: bytes) -> None:
        if self.complete:
            raise ValueError("more data than the reply announced")
        if self._chunked is not None:
            pieces = self._chunked.feed(data)
            self.complete = self._chunked.done
        elif self._remaining >= 0:
            if len(data) > self._remaining:
                raise ValueError("more data than the reply announced")
            self._remaining -= len(data)
            pieces = [data]
            self.complete = not self._remaining
        else:
            pieces = [data]
        for piece in pieces:
            if piece:
                self.chunks.append(piece)
                self.buffered += len(piece)
        if (
            self.buffered > _HIGH_WATER
            and not self.unbounded
            and not self._paused
            and self.transport is not None
        ):
            self.transport.pause_reading()
            self._paused = True
        self._wake()

    def _fail(self, error: Exception) -> None:
        self.error = error
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- used by the pool and the response -------------------------------------------
    def send(self, method: str, target: str, head: bytes, body: bytes | None) -> None:
        self._reset(method)
        assert self.transport is not None
        request = f"{method} {target} HTTP/1.1\r\n".encode("utf-8", "surrogateescape") + head
        if body:
            self.transport.writelines((request, body))
        else:
            self.transport.write(request)

    async def drained(self) -> None:
        """Wait until the transport took the request (bounded write buffer)."""
        writable = self._writable
        if writable is not None and not writable.done():
            await writable

    async def wait(self) -> None:
        """Wait for more of the reply, at most the read timeout."""
        if self.error is not None:
            raise self.error
        waiter = self._waiter = self._loop.create_future()
        timer = self._loop.call_later(self._read_s, self._timed_out, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
        if self.error is not None:
            raise self.error

    def _timed_out(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            self._fail(_network(f"no data from the server for {self._read_s:g} s"))

    def take(self, amount: int) -> bytes:
        """Up to ``amount`` buffered body bytes (all of them if negative)."""
        if amount < 0 or amount >= self.buffered:
            data = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
            self.chunks.clear()
        else:
            parts: list[bytes] = []
            need = amount
            while need:
                chunk = self.chunks.popleft()
                if len(chunk) > need:
                    self.chunks.appendleft(chunk[need:])
                    chunk = chunk[:need]
                parts.append(chunk)
                need -= len(chunk)
            data = b"".join(parts)
        self.buffered -= len(data)
        if self._paused and self.buffered <= _HIGH_WATER // 2 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    def abort(self) -> None:
        self.reusable = False
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class Response:
    """A reply: status, reason, headers (lower-case names) and the body, read with
    :meth:`read`. The connection goes back to the pool once the body has been read to
    the end (the reply then lets go of it: a later :meth:`read` returns ``b""`` and never
    sees the next request's reply); :meth:`close` before that closes it."""

    __slots__ = ("_conn", "_pool", "headers", "reason", "status")

    def __init__(self, pool: Pool, conn: _Connection) -> None:
        self._pool = pool
        self._conn: _Connection | None = conn
        self.status = conn.status
        self.reason = conn.reason
        self.headers = conn.headers
        if conn.complete and not conn.chunks:
            self._finish()

    async def read(self, amount: int = -1) -> bytes:
        """Up to ``amount`` bytes of the body (all of it if negative); ``b""`` at its end.

        Waits until ``amount`` bytes (or, for larger amounts, the buffering limit) are
        in, or the body ended: few large pieces rather than many small ones."""
        conn = self._conn
        if conn is None:
            return b""
        if amount < 0:
            conn.unbounded = True
            if conn.transport is not None and conn._paused:
                conn._paused = False
                conn.transport.resume_reading()
        want = amount if 0 <= amount < _HIGH_WATER else _HIGH_WATER
        try:
            while not conn.complete and (amount < 0 or conn.buffered < want):
                await conn.wait()
        except BaseException:
            self.close()
            raise
        data = conn.take(amount)
        if conn.complete and not conn.chunks:
            self._finish()
        return data

    def _finish(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.reusable = conn.keep_alive and conn.error is None and not conn.closed
            self._pool.give_back(conn)

    def close(self) -> None:
        """Done with this reply: an unread rest of the body closes the connection."""
        conn = self._conn
        if conn is not None:
            conn.abort()
            conn.chunks.clear()
            self._finish()


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where requests go and how: the connection (TLS only for https), its timeouts,
    and the Host header (the URL's ``host[:port]``, which the signature covers)."""

    scheme: str
    host: str
    port: int
    tls: ssl.SSLContext | None  # https only
    connect_s: float
    read_s: float
    authority: str

    @classmethod
    def from_url(
        cls, url: str, ssl_context: ssl.SSLContext | None, connect_s: float, read_s: float
    ) -> Endpoint:
        parts = urlsplit(url)
        https = parts.scheme == "https"
        if https and ssl_context is None:
            ssl_context = ssl.create_default_context()
        return cls(
            parts.scheme,
            parts.hostname or "",
            parts.port or (443 if https else 80),
            ssl_context if https else None,
            connect_s,
            read_s,
            parts.netloc,
        )


class Pool:
    """Kept-alive connections to one endpoint; ``limit`` bounds the idle ones (the caller
    bounds the requests in flight)."""

    def __init__(self, endpoint: Endpoint, limit: int) -> None:
        self.endpoint = endpoint
        self._limit = limit
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()

    async def request(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None = None
    ) -> Response:
        """Send a request (``target``: path and query, already encoded) and return once
        the reply head is in. Headers are sent as given, plus Host and Content-Length."""
        lines = [f"host: {self.endpoint.authority}"]
        lines.extend(f"{name}: {value}" for name, value in headers.items())
        if body is not None and "content-length" not in headers:
            lines.append(f"content-length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
        while True:
            conn, reused = await self._acquire()
            try:
                conn.send(method, target, head, body)
                await conn.drained()
                while not conn.has_head:
                    await conn.wait()
            except TransferError:
                # Closed by the server before a byte of the reply (an idle timeout racing
                # the request): try a fresh connection. Never after our own read timeout.
                stale = reused and not conn.got_any and conn.dropped
                self._discard(conn)
                if stale:
                    continue  # the server closed it while idle: try a fresh one
                raise
            except BaseException:
                self._discard(conn)
                raise
            return Response(self, conn)

    async def _acquire(self) -> tuple[_Connection, bool]:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn, True
            self._open.discard(conn)
        loop = asyncio.get_running_loop()
        end = self.endpoint
        conn = _Connection(loop, end.read_s)
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: conn,
                    end.host,
                    end.port,
                    ssl=end.tls,
                    server_hostname=end.host if end.tls is not None else None,
                ),
                end.connect_s,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            detail = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            raise _network(f"cannot connect to {end.authority}: {detail}") from None
        self._open.add(conn)
        return conn, False

    def give_back(self, conn: _Connection) -> None:
        if conn.reusable and not conn.closed and len(self._idle) < self._limit:
            conn.method = ""  # idle: a close now is no failure of anything
            self._idle.append(conn)
        else:
            self._discard(conn)

    def _discard(self, conn: _Connection) -> None:
        conn.abort()
        self._open.discard(conn)

    async def close(self) -> None:
        for conn in list(self._open):
            conn.abort()
        self._open.clear()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports run connection_lost
