"""The fast path's HTTP/1.1 client against scripted servers: body framings, keep-alive
and when a connection is not reused, flow control, and every way a reply can go wrong
becoming a "network" TransferError (which the caller retries)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
import uvloop

from fsx_stage.transfer.errors import TransferError
from fsx_stage.transfer.s3 import http1
from fsx_stage.transfer.s3.http1 import Endpoint, Pool, parse_head

T = TypeVar("T")
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class Server:
    """A loopback server keeping every request it read (head and body). Each connection
    runs ``handler(reader, writer, n)`` (n: its number) or, with ``replies``, answers
    every request with ``replies(request_line)``."""

    def __init__(
        self, handler: Handler | None = None, *, replies: Callable[[str], bytes] | None = None
    ) -> None:
        self.handler = handler or self._replying
        self.replies = replies
        self.connections = 0
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.port = 0

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer, self.connections)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _replying(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int
    ) -> None:
        assert self.replies is not None
        while True:
            line, _headers = await self.read_request(reader)
            writer.write(self.replies(line))
            await writer.drain()

    async def read_request(self, reader: asyncio.StreamReader) -> tuple[str, dict[str, str]]:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        line, *rest = head.rstrip("\r\n").split("\r\n")
        headers = {}
        for item in rest:
            name, _, value = item.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.requests.append((line, headers, body))
        return line, headers

    def pool(self, read_s: float = 5.0) -> Pool:
        return Pool(Endpoint.from_url(f"http://127.0.0.1:{self.port}", None, 5.0, read_s), 8)


def run(main: Callable[[], Awaitable[T]]) -> T:
    return uvloop.run(main())  # type: ignore[arg-type]


def reply(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_a_body_framed_by_content_length_and_the_connection_kept_alive() -> None:
    async def main() -> None:
        async with Server(replies=lambda line: reply(line.encode())) as server:
            pool = server.pool()
            for path in ("/a", "/b%20c?x=1"):
                response = await pool.request("GET", path, {"x-amz-date": "now"})
                assert response.status == 200
                assert response.headers["content-length"] == str(len(f"GET {path} HTTP/1.1"))
                assert await response.read() == f"GET {path} HTTP/1.1".encode()
                assert await response.read() == b""
            await pool.close()
        assert server.connections == 1
        assert server.requests[0][1]["host"] == f"127.0.0.1:{server.port}"
        assert server.requests[0][1]["x-amz-date"] == "now"

    run(main)


def test_a_request_body_is_sent_with_its_length() -> None:
    async def main() -> None:
        async with Server(replies=lambda _: reply(b"", 'ETag: "e"')) as server:
            pool = server.pool()
            response = await pool.request("PUT", "/k", {}, b"x" * 300_000)
            assert response.headers["etag"] == '"e"'
            await pool.close()
        assert server.requests[0][2] == b"x" * 300_000

    run(main)


def test_a_chunked_body_is_decoded_with_extensions_and_trailers() -> None:
    wire = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n"
    )

    async def main() -> None:
        async with Server(replies=lambda _: wire) as server:
            pool = server.pool()
            for _ in range(2):
                response = await pool.request("GET", "/", {})
                assert await response.read() == b"hello world"
            await pool.close()
        assert server.connections == 1

    run(main)


def test_a_body_without_length_runs_to_the_end_of_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nall of it")

    server = Server(handler)

    async def main() -> None:
        async with server:
            pool = server.pool()
            for _ in range(2):
                response = await pool.request("GET", "/", {})
                assert await response.read() == b"all of it"
            await pool.close()
        assert server.connections == 2

    run(main)


@pytest.mark.parametrize(
    "headers", [("Connection: close",), ("Connection: keep-alive, Close",)], ids=["close", "Close"]
)
def test_connection_close_is_honoured(headers: tuple[str, ...]) -> None:
    async def main() -> None:
        async with Server(replies=lambda _: reply(b"ok", *headers)) as server:
            pool = server.pool()
            for _ in range(2):
                response = await pool.request("GET", "/", {})
                assert await response.read() == b"ok"
            await pool.close()
        assert server.connections == 2

    run(main)


def test_a_head_reply_has_no_body_even_with_a_length() -> None:
    async def main() -> None:
        async with Server(
            replies=lambda _: b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
        ) as server:
            pool = server.pool()
            for _ in range(2):
                response = await pool.request("HEAD", "/", {})
                assert response.headers["content-length"] == "1000"
                assert await response.read() == b""
            await pool.close()
        assert server.connections == 1

    run(main)


def test_an_interim_100_continue_is_skipped() -> None:
    async def main() -> None:
        async with Server(
            replies=lambda _: b"HTTP/1.1 100 Continue\r\n\r\n" + reply(b"done")
        ) as server:
            pool = server.pool()
            response = await pool.request("PUT", "/", {}, b"data")
            assert (response.status, await response.read()) == (200, b"done")
            await pool.close()

    run(main)


def test_a_body_cut_short_is_a_network_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 40)
        await writer.drain()

    server = Server(handler)

    async def main() -> None:
        async with server:
            pool = server.pool()
            response = await pool.request("GET", "/", {})
            with pytest.raises(TransferError, match="before the end of the reply") as info:
                await response.read()
            assert info.value.category == "network"
            await pool.close()

    run(main)


def test_more_bytes_than_announced_is_a_network_error() -> None:
    async def main() -> None:
        async with Server(replies=lambda _: reply(b"abc")[:-3] + b"abcdef") as server:
            pool = server.pool()
            with pytest.raises(TransferError, match="more data than the reply announced"):
                await (await pool.request("GET", "/", {})).read()
            await pool.close()

    run(main)


@pytest.mark.parametrize(
    "wire",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
    ],
    ids=["not-http", "bad-status", "bad-header"],
)
def test_a_malformed_reply_head_is_a_network_error(wire: bytes) -> None:
    async def main() -> None:
        async with Server(replies=lambda _: wire) as server:
            pool = server.pool()
            with pytest.raises(TransferError, match="malformed reply") as info:
                await pool.request("GET", "/", {})
            assert info.value.category == "network"
            await pool.close()

    run(main)


def test_a_silent_server_times_out() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await server.read_request(reader)
        await asyncio.sleep(5)

    server = Server(handler)

    async def main() -> None:
        async with server:
            pool = server.pool(read_s=0.2)
            with pytest.raises(TransferError, match=r"no data from the server for 0\.2 s"):
                await pool.request("GET", "/", {})
            await pool.close()

    run(main)


def test_a_kept_alive_connection_closed_by_the_server_is_replaced_silently() -> None:
    """The server takes the second request on the kept-alive connection and closes it
    without a byte of reply (an idle timeout racing the request): the client retries
    once on a new connection."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await server.read_request(reader)
        writer.write(reply(b"first" if n == 1 else b"again"))
        await writer.drain()
        if n == 1:
            await server.read_request(reader)  # ...and hang up

    server = Server(handler)

    async def main() -> None:
        async with server:
            pool = server.pool()
            assert await (await pool.request("GET", "/", {})).read() == b"first"
            assert await (await pool.request("GET", "/", {})).read() == b"again"
            await pool.close()
        assert server.connections == 2

    run(main)


def test_a_silent_server_is_not_retried_on_every_kept_alive_connection() -> None:
    """A read timeout is no stale connection: with several connections kept alive, a
    server that stops answering fails the request after one timeout, not one each."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await server.read_request(reader)
        writer.write(reply(b"ok"))
        await writer.drain()
        await server.read_request(reader)  # the second request is never answered
        await asyncio.sleep(5)

    server = Server(handler)

    async def main() -> None:
        async with server:
            pool = server.pool(read_s=0.3)
            first = await asyncio.gather(*(pool.request("GET", "/", {}) for _ in range(3)))
            for response in first:
                assert await response.read() == b"ok"
            started = server.connections
            with pytest.raises(TransferError, match="no data from the server"):
                await pool.request("GET", "/", {})
            assert server.connections == started  # no fresh connection was tried
            await pool.close()

    run(main)


def test_a_new_connection_closed_without_reply_is_an_error_not_a_loop() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await server.read_request(reader)

    server = Server(handler)

    async def main() -> None:
        async with server:
            pool = server.pool()
            with pytest.raises(TransferError, match="connection closed before the end"):
                await pool.request("GET", "/", {})
            await pool.close()
        assert server.connections == 1

    run(main)


def test_nobody_listening_is_a_network_error() -> None:
    async def main() -> None:
        async with Server(replies=lambda _: b"") as server:
            port = server.port
        pool = Pool(Endpoint.from_url(f"http://127.0.0.1:{port}", None, 5.0, 5.0), 8)
        with pytest.raises(TransferError, match=r"cannot connect to 127\.0\.0\.1") as info:
            await pool.request("GET", "/", {})
        assert info.value.category == "network"

    run(main)


def test_closing_a_reply_before_its_end_drops_the_connection() -> None:
    async def main() -> None:
        async with Server(replies=lambda _: reply(b"z" * 500_000)) as server:
            pool = server.pool()
            response = await pool.request("GET", "/", {})
            assert len(await response.read(10)) == 10
            response.close()
            assert await response.read() == b""
            assert len(await (await pool.request("GET", "/", {})).read()) == 500_000
            await pool.close()
        assert server.connections == 2

    run(main)


def test_a_finished_reply_never_reads_the_next_reply_on_its_connection() -> None:
    """Once a body is read to its end the connection serves the next request; reading
    the finished reply again (as a copy loop does before it stops) must not take the
    next reply's bytes."""

    async def main() -> None:
        async with Server(replies=lambda line: reply(line.encode() * 100)) as server:
            pool = server.pool()
            first = await pool.request("GET", "/1", {})
            assert await first.read(1 << 20) == b"GET /1 HTTP/1.1" * 100
            second = await pool.request("GET", "/2", {})
            await asyncio.sleep(0.05)  # the second reply is in the shared connection's buffer
            assert await first.read(1 << 20) == b""
            assert await second.read() == b"GET /2 HTTP/1.1" * 100
            await pool.close()
        assert server.connections == 1

    run(main)


def test_a_slow_reader_pauses_the_socket_instead_of_buffering_the_body() -> None:
    size = 16 * 1024 * 1024

    async def main() -> None:
        async with Server(replies=lambda _: reply(b"y" * size)) as server:
            pool = server.pool()
            response = await pool.request("GET", "/", {})
            conn = response._conn
            assert conn is not None
            got = 0
            most = 0
            while chunk := await response.read(64 * 1024):
                got += len(chunk)
                await asyncio.sleep(0)  # the reader lags behind
                most = max(most, conn.buffered)
            assert got == size
            assert most <= http1._HIGH_WATER + 512 * 1024
            await pool.close()

    run(main)


def test_reply_heads_parse_into_lower_case_names() -> None:
    status, reason, headers, keep_alive = parse_head(
        b'HTTP/1.1 404 Not Found\r\nX-Amz-Meta-A: 1\r\nx-amz-meta-a: 2\r\nETag:  "e" '
    )
    assert (status, reason, keep_alive) == (404, "Not Found", True)
    assert headers == {"x-amz-meta-a": "1, 2", "etag": '"e"'}
    assert parse_head(b"HTTP/1.0 200 OK")[3] is False
    assert parse_head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive")[3] is True


@pytest.mark.parametrize(
    "wire", [b"zz\r\n", b"5\r\nhelloXX", b"0\r\n\r\nextra"], ids=["size", "crlf", "after-end"]
)
def test_a_malformed_chunked_body_is_refused(wire: bytes) -> None:
    with pytest.raises(ValueError):
        http1._Chunked().feed(wire)
