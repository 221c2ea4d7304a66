"""A fault-injecting HTTP/1.1 proxy on loopback, in front of an S3 endpoint.

Clients talk to :attr:`FaultProxy.endpoint_url` exactly as they would to the
server; the proxy forwards each request on its own upstream connection and, when
the current :class:`Faults` plan says so, breaks the exchange in one of these ways:

``reset``     forward the request, send the response headers and half the body, then
              reset the connection (RST). With an empty body: reset instead of answering
              (the server did the work, the client never hears about it).
``reset_upload`` forward half of the request body, then reset both connections (an
              upload cut off mid-body; only requests that have a body are eligible).
``truncate``  send headers promising the full body, then close cleanly half-way.
``corrupt``   flip one byte in the middle of the response body (length unchanged).
``slowdown``  answer ``503 SlowDown`` with an S3 XML error body, without forwarding.
``error500``  answer ``500 InternalError`` with an S3 XML error body, without forwarding.
``latency``   wait ``latency_s`` before sending the response (added time to first byte).

Each kind has a ``*_count`` (the next N eligible requests get it, deterministic) and a
``*_rate`` (probability per eligible request once the count is used up). A request is
eligible when it matches ``methods``, ``key_pattern`` (a regex searched in the decoded
path, ``/bucket/key`` in path style) and is among the ``first_n`` requests of the plan.
At most one breaking fault per request (first of reset, reset_upload, slowdown, error500,
truncate, corrupt whose count/rate fires); latency combines with any.

HTTP handling is deliberately small: request and response bodies are framed by
``Content-Length`` or ``Transfer-Encoding: chunked`` (aws-chunked payloads travel inside
either), ``Expect: 100-continue`` is answered by the proxy itself, connections are
kept alive. The proxy runs its own asyncio loop in a daemon thread; ``set_faults`` and
the counters are thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Self
from urllib.parse import unquote, urlsplit

from tests.testbed.ports import LOOPBACK
from tests.testbed.server import Server

MAX_HEADER_BYTES = 64 * 1024
COPY_CHUNK = 256 * 1024


class FaultKind(StrEnum):
    RESET = "reset"
    RESET_UPLOAD = "reset_upload"
    SLOWDOWN = "slowdown"
    ERROR500 = "error500"
    TRUNCATE = "truncate"
    CORRUPT = "corrupt"
    LATENCY = "latency"


# Faults decided before forwarding, and faults that need a response body to act on.
_REQUEST_FAULTS = (
    FaultKind.RESET,
    FaultKind.RESET_UPLOAD,
    FaultKind.SLOWDOWN,
    FaultKind.ERROR500,
)
_BODY_FAULTS = (FaultKind.TRUNCATE, FaultKind.CORRUPT)


@dataclass(frozen=True)
class Faults:
    """One fault plan. All zero: a transparent proxy."""

    reset_count: int = 0
    reset_rate: float = 0.0
    reset_upload_count: int = 0
    reset_upload_rate: float = 0.0
    slowdown_count: int = 0
    slowdown_rate: float = 0.0
    error500_count: int = 0
    error500_rate: float = 0.0
    truncate_count: int = 0
    truncate_rate: float = 0.0
    corrupt_count: int = 0
    corrupt_rate: float = 0.0
    latency_s: float = 0.0
    latency_count: int = 0
    latency_rate: float = 0.0
    methods: frozenset[str] | None = None
    key_pattern: str | None = None
    first_n: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_rate") and not 0.0 <= value <= 1.0:
                raise ValueError(f"{f.name} must be within [0, 1], got {value}")
            if f.name.endswith("_count") and value < 0:
                raise ValueError(f"{f.name} must be >= 0, got {value}")
        if self.latency_s < 0:
            raise ValueError(f"latency_s must be >= 0, got {self.latency_s}")
        if self.methods is not None:
            object.__setattr__(self, "methods", frozenset(m.upper() for m in self.methods))
        if self.key_pattern is not None:
            re.compile(self.key_pattern)

    def count(self, kind: FaultKind) -> int:
        value: int = getattr(self, f"{kind.value}_count")
        return value

    def rate(self, kind: FaultKind) -> float:
        value: float = getattr(self, f"{kind.value}_rate")
        return value


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]

    @property
    def path(self) -> str:
        return unquote(urlsplit(self.target).path)

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None


class _Plan:
    """The live state of a :class:`Faults` plan: remaining counts, RNG, counters."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self.remaining = {kind: faults.count(kind) for kind in FaultKind}
        self.rng = random.Random(faults.seed)
        self.pattern = re.compile(faults.key_pattern) if faults.key_pattern else None
        self.requests = 0
        self.injected: Counter[FaultKind] = Counter()
        self.log: list[tuple[str, str, FaultKind | None]] = []

    def eligible(self, request: Request) -> bool:
        f = self.faults
        if f.first_n is not None and self.requests > f.first_n:
            return False
        if f.methods is not None and request.method not in f.methods:
            return False
        return self.pattern is None or self.pattern.search(request.path) is not None

    def fires(self, kind: FaultKind) -> bool:
        if self.remaining[kind] > 0:
            self.remaining[kind] -= 1
            return True
        rate = self.faults.rate(kind)
        return rate > 0 and self.rng.random() < rate


@dataclass
class _Decision:
    plan: _Plan
    eligible: bool
    log_index: int
    fault: FaultKind | None = None
    latency: bool = False


class FaultProxy(Server):
    """The proxy; start it, point clients at :attr:`endpoint_url`, then ``set_faults``."""

    def __init__(self, upstream_host: str, upstream_port: int, port: int = 0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._port = port
        self._lock = threading.Lock()
        self._plan = _Plan(Faults())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()

    @classmethod
    def for_endpoint(cls, endpoint_url: str) -> FaultProxy:
        parts = urlsplit(endpoint_url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"need an http://host:port endpoint, got {endpoint_url!r}")
        return cls(parts.hostname, parts.port)

    # -- control (any thread) -------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self._port}"

    def set_faults(self, **plan: object) -> None:
        """Replace the fault plan (see :class:`Faults`) and zero the counters.

        ``set_faults()`` with no arguments makes the proxy transparent again.
        """
        faults = Faults(**plan)  # type: ignore[arg-type]
        with self._lock:
            self._plan = _Plan(faults)

    @property
    def injected(self) -> dict[FaultKind, int]:
        """How many times each fault was injected under the current plan."""
        with self._lock:
            return {kind: self._plan.injected[kind] for kind in FaultKind}

    @property
    def requests(self) -> int:
        """Requests seen under the current plan."""
        with self._lock:
            return self._plan.requests

    @property
    def log(self) -> list[tuple[str, str, FaultKind | None]]:
        """``(method, path, fault or None)`` per request under the current plan."""
        with self._lock:
            return list(self._plan.log)

    def start(self) -> Self:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._serve, LOOPBACK, self._port, limit=MAX_HEADER_BYTES)
                )
                self._port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
        self._thread.start()
        ready.wait()
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
        fut.result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._loop = self._thread = None

    # -- the event loop side ----------------------------------------------------------
    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._conns):
            task.cancel()
        if self._conns:
            await asyncio.gather(*self._conns, return_exceptions=True)

    def _decide(self, request: Request) -> _Decision:
        """Count the request and decide its up-front fault and latency."""
        with self._lock:
            plan = self._plan
            plan.requests += 1
            decision = _Decision(plan, plan.eligible(request), len(plan.log))
            if decision.eligible:
                has_body = _request_framing(request) != 0
                decision.fault = next(
                    (
                        k
                        for k in _REQUEST_FAULTS
                        if (has_body or k is not FaultKind.RESET_UPLOAD) and plan.fires(k)
                    ),
                    None,
                )
                decision.latency = plan.faults.latency_s > 0 and plan.fires(FaultKind.LATENCY)
                if decision.latency:
                    plan.injected[FaultKind.LATENCY] += 1
            if decision.fault is not None:
                plan.injected[decision.fault] += 1
            plan.log.append((request.method, request.path, decision.fault))
            return decision

    def _decide_body_fault(self, decision: _Decision) -> FaultKind | None:
        """Once a response body is known to exist: truncate or corrupt it?"""
        with self._lock:
            plan = decision.plan
            if plan is not self._plan or not decision.eligible:
                return None
            fault = next((k for k in _BODY_FAULTS if plan.fires(k)), None)
            if fault is not None:
                plan.injected[fault] += 1
                method, path, _ = plan.log[decision.log_index]
                plan.log[decision.log_index] = (method, path, fault)
            return fault

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                request = await _read_request(client_r)
                if request is None:
                    return
                decision = self._decide(request)
                fault = decision.fault
                if request.header("expect") is not None:
                    client_w.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                if fault in (FaultKind.SLOWDOWN, FaultKind.ERROR500):
                    await _copy_body(client_r, None, _request_framing(request))
                    if decision.latency:
                        await asyncio.sleep(decision.plan.faults.latency_s)
                    client_w.write(_error_response(fault, request))
                    await client_w.drain()
                    continue
                if upstream is not None and upstream[0].at_eof():  # server closed it (idle)
                    upstream[1].close()
                    upstream = None
                if upstream is None:
                    upstream = await asyncio.open_connection(*self.upstream, limit=MAX_HEADER_BYTES)
                up_r, up_w = upstream
                up_w.write(_request_head(request))
                framing = _request_framing(request)
                if fault is FaultKind.RESET_UPLOAD:
                    await _copy_body(client_r, up_w, framing, stop_after=_half(framing))
                    await up_w.drain()
                    _abort_with_rst(up_w)
                    upstream = None
                    raise _ResetClient
                await _copy_body(client_r, up_w, framing)
                await up_w.drain()
                keep = await self._relay_response(request, up_r, client_w, decision)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        except asyncio.CancelledError:  # proxy shutdown: end this connection quietly
            return
        except _ResetClient:
            _abort_with_rst(client_w)
            return
        finally:
            self._conns.discard(task)
            if upstream is not None:
                upstream[1].close()
            if not client_w.is_closing():
                client_w.close()

    async def _relay_response(
        self,
        request: Request,
        up_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        decision: _Decision,
    ) -> bool:
        """Relay one response; False when the client connection must end afterwards."""
        while True:  # skip interim 1xx responses (we strip Expect, but be safe)
            head = await up_r.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            if status >= 200 or status == 101:
                break
        headers = _parse_headers(head.decode("latin-1").split("\r\n")[1:])
        framing = _response_framing(request.method, status, headers)
        if decision.latency:
            await asyncio.sleep(decision.plan.faults.latency_s)
        if decision.fault is FaultKind.RESET:
            if framing == 0:
                raise _ResetClient
            client_w.write(head)
            await _copy_body(up_r, client_w, framing, stop_after=_half(framing))
            await client_w.drain()
            raise _ResetClient
        body_fault = self._decide_body_fault(decision) if framing != 0 else None
        client_w.write(head)
        if body_fault is FaultKind.TRUNCATE:
            await _copy_body(up_r, client_w, framing, stop_after=_half(framing))
            await client_w.drain()
            return False
        corrupt_at = _half(framing) if body_fault is FaultKind.CORRUPT else None
        await _copy_body(up_r, client_w, framing, corrupt_at=corrupt_at)
        await client_w.drain()
        connection = (_header(headers, "connection") or "").lower()
        return framing != -1 and connection != "close"


class _ResetClient(Exception):
    """Internal: end the client connection with a TCP reset."""


# -- HTTP/1.1 framing -------------------------------------------------------------------
# A framing is: an int >= 0 (Content-Length), CHUNKED, or UNTIL_CLOSE.
CHUNKED = -2
UNTIL_CLOSE = -1


def _parse_headers(lines: list[str]) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for line in lines:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return headers


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    lname = name.lower()
    return next((v for k, v in headers if k.lower() == lname), None)


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise
        return None  # the client closed an idle keep-alive connection
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    return Request(method.upper(), target, version, _parse_headers(lines[1:]))


def _request_framing(request: Request) -> int:
    if "chunked" in (request.header("transfer-encoding") or "").lower():
        return CHUNKED
    return int(request.header("content-length") or 0)


def _response_framing(method: str, status: int, headers: list[tuple[str, str]]) -> int:
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return 0
    if "chunked" in (_header(headers, "transfer-encoding") or "").lower():
        return CHUNKED
    length = _header(headers, "content-length")
    return int(length) if length is not None else UNTIL_CLOSE


def _request_head(request: Request) -> bytes:
    lines = [f"{request.method} {request.target} {request.version}"]
    lines += [f"{k}: {v}" for k, v in request.headers if k.lower() != "expect"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _half(framing: int) -> int:
    """How many body bytes to let through before a mid-body fault."""
    return framing // 2 if framing > 0 else 1


async def _copy_body(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter | None,
    framing: int,
    stop_after: int | None = None,
    corrupt_at: int | None = None,
) -> None:
    """Copy one message body; stop after ``stop_after`` payload bytes if given.

    With ``corrupt_at``, flip the payload byte at that offset.
    """
    sent = 0

    async def emit(data: bytes, payload: bool = True) -> bool:
        nonlocal sent
        if payload and corrupt_at is not None and sent <= corrupt_at < sent + len(data):
            i = corrupt_at - sent
            data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
        if payload and stop_after is not None and sent + len(data) >= stop_after:
            data = data[: stop_after - sent]
            if writer is not None:
                writer.write(data)
            sent = stop_after
            return False
        if writer is not None:
            writer.write(data)
            if writer.transport.get_write_buffer_size() > COPY_CHUNK:
                await writer.drain()
        if payload:
            sent += len(data)
        return True

    if framing >= 0:
        remaining = framing
        while remaining:
            data = await reader.read(min(remaining, COPY_CHUNK))
            if not data:
                raise asyncio.IncompleteReadError(b"", remaining)
            remaining -= len(data)
            if not await emit(data):
                return
    elif framing == UNTIL_CLOSE:
        while data := await reader.read(COPY_CHUNK):
            if not await emit(data):
                return
    else:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                if stop_after is not None:  # never let the terminating chunk through
                    return
                await emit(size_line, payload=False)
                while True:  # trailers, then the empty line
                    line = await reader.readuntil(b"\r\n")
                    await emit(line, payload=False)
                    if line == b"\r\n":
                        return
            data = await reader.readexactly(size + 2)
            if stop_after is not None and sent + size >= stop_after:
                keep = stop_after - sent
                await emit(size_line, payload=False)
                await emit(data[:keep])
                return
            await emit(size_line, payload=False)
            await emit(data[:size])
            await emit(data[size:], payload=False)


def _error_response(kind: FaultKind, request: Request) -> bytes:
    status, reason, code, message = {
        FaultKind.SLOWDOWN: (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
        FaultKind.ERROR500: (
            500,
            "Internal Server Error",
            "InternalError",
            "We encountered an internal error. Please try again.",
        ),
    }[kind]
    resource = request.path.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<Resource>{resource}</Resource><RequestId>fault-proxy</RequestId></Error>"
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\n"
        "x-amz-request-id: fault-proxy\r\n"
        "\r\n"
    ).encode()
    return head + body


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
