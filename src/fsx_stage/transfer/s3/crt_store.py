"""The store on the AWS CRT (``awscrt.s3.S3Client``): GETs, ranged GETs, PUTs and parts.

The CRT splits a GET into parts, fetches them on its own event loop threads and hands
the body over in order (``on_body``); each piece is ``pwrite``n to the temporary file the
caller opened with ``O_NOFOLLOW`` (the CRT never opens a path), and fed to the caller's
digest. Its throughput target sizes its connection pool: the CRT's own recommendation
for a known EC2 instance type, else ``FSX_STAGE_CRT_GBPS``, else 2.5 Gb/s per CPU (its
100 Gb/s default opens far too many connections on a small machine: 4-5 s per GiB
measured here). Head, listing, deletion and the multipart bookkeeping stay on the
control plane (botocore), as do the credentials (refreshed there, read by the CRT).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from awscrt import auth, http, s3
from awscrt import io as crtio

from fsx_stage.transfer.errors import TransferError
from fsx_stage.transfer.models import Encryption, MiB, S3Settings
from fsx_stage.transfer.s3.bodies import write_at
from fsx_stage.transfer.s3.botocore_store import BotocoreStore
from fsx_stage.transfer.s3.checksums import Digest
from fsx_stage.transfer.s3.control_plane import OnControlPlane
from fsx_stage.transfer.s3.direct_client import (
    canonical_query,
    error_reply,
    info_from_headers,
    locate,
    quote_key,
)
from fsx_stage.transfer.s3.store import Got, PutResult

PART_SIZE = 8 * MiB
MAX_PUT = 5 * 1024 * MiB  # the largest single PutObject S3 takes


def throughput_target_gbps() -> float:
    """The CRT's throughput target for this machine (see the module docstring)."""
    configured = os.environ.get("FSX_STAGE_CRT_GBPS")
    if configured:
        return float(configured)
    recommended = s3.get_recommended_throughput_target_gbps()
    if recommended:
        return float(recommended)
    return min(100.0, 2.5 * (os.cpu_count() or 1))


class _Credentials:
    """The control plane's current credentials, for the CRT's signer (on its threads)."""

    def __init__(self, source: Any) -> None:
        self._source = source  # has ``async get_frozen_credentials()``
        self._current: auth.AwsCredentials | None = None

    async def refresh(self) -> None:
        frozen = await self._source.get_frozen_credentials()
        current = self._current
        if (
            current is None
            or (current.access_key_id, current.secret_access_key)
            != (
                frozen.access_key,
                frozen.secret_key,
            )
            or current.session_token != frozen.token
        ):
            self._current = auth.AwsCredentials(frozen.access_key, frozen.secret_key, frozen.token)

    def get(self) -> auth.AwsCredentials:
        assert self._current is not None, "refresh() before the first request"
        return self._current


class _Reply:
    """What the CRT's callbacks learn about one request, handed to the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, operation: str) -> None:
        self.loop = loop
        self.operation = operation
        self.status = 0
        self.headers: dict[str, str] = {}
        self.head: asyncio.Future[None] = loop.create_future()

    def on_headers(self, status_code: int, headers: list[tuple[str, str]], **_: Any) -> None:
        self.status = status_code
        self.headers = {name.lower(): value for name, value in headers}
        if status_code < 300:
            self.loop.call_soon_threadsafe(_resolve, self.head, None)

    def error(
        self, exc: BaseException | None, error_body: bytes | None, status: int | None
    ) -> BaseException | None:
        if exc is None:
            return None
        if status is not None and status >= 300:
            return error_reply(status, "", error_body or b"", self.operation)
        return TransferError(f"S3 request failed: {exc}", "network")


def _resolve(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


class _QueuedBody:
    """A whole-object body handed over by ``on_body``, read on the event loop."""

    def __init__(self) -> None:
        self.task: asyncio.Future[None] | None = None  # the request, cancelled by close()
        self._chunks: deque[bytes] = deque()
        self._done = False
        self._error: BaseException | None = None
        self._wake = asyncio.Event()

    def feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._wake.set()

    def finish(self, error: BaseException | None) -> None:
        self._done, self._error = True, error
        self._wake.set()

    async def read(self, amount: int = -1) -> bytes:
        while not self._chunks and not self._done:
            self._wake.clear()
            await self._wake.wait()
        if not self._chunks:
            if self._error is not None:
                raise self._error
            return b""
        if amount < 0:
            if not self._done:
                while not self._done:
                    self._wake.clear()
                    await self._wake.wait()
                if self._error is not None:
                    raise self._error
            data = b"".join(self._chunks)
            self._chunks.clear()
            return data
        chunk = self._chunks.popleft()
        if len(chunk) > amount:
            chunk, rest = chunk[:amount], chunk[amount:]
            self._chunks.appendleft(rest)
        return chunk

    def close(self) -> None:
        if not self._done and self.task is not None:
            self.task.cancel()


class CrtStore(OnControlPlane):
    """:class:`~fsx_stage.transfer.s3.store.ObjectStore` with the data plane on the CRT."""

    def __init__(
        self,
        client: s3.S3Client,
        credentials: _Credentials,
        prefix_path: str,
        authority: str,
        control: BotocoreStore,
        encryption: Encryption,
    ) -> None:
        super().__init__(control, encryption)
        self._client = client
        self._credentials = credentials
        self._base_path = prefix_path
        self._authority = authority
        self._pending: set[s3.S3Request] = set()

    @classmethod
    async def create(
        cls,
        settings: S3Settings,
        bucket: str,
        encryption: Encryption,
        pool_size: int,
        control: BotocoreStore,
    ) -> CrtStore:
        from urllib.parse import urlsplit

        located = await locate(control.client, bucket, settings)
        if located is None:
            raise TransferError(
                "FSX_STAGE_STORE=crt needs a plain endpoint URL layout for the bucket", "invalid"
            )
        prefix, region, source = located
        credentials = _Credentials(source)
        await credentials.refresh()
        parts = urlsplit(prefix)
        tls = (
            s3.S3RequestTlsMode.ENABLED if parts.scheme == "https" else s3.S3RequestTlsMode.DISABLED
        )
        tls_options = None
        bundle = os.environ.get("AWS_CA_BUNDLE")
        if parts.scheme == "https" and bundle:
            context = crtio.ClientTlsContext(
                crtio.TlsContextOptions().override_default_trust_store_from_path(ca_filepath=bundle)
            )
            tls_options = context.new_connection_options()
        provider = auth.AwsCredentialsProvider.new_delegate(credentials.get)
        client = s3.S3Client(
            region=region,
            tls_mode=tls,
            tls_connection_options=tls_options,
            signing_config=s3.create_default_s3_signing_config(
                region=region, credential_provider=provider
            ),
            part_size=PART_SIZE,
            throughput_target_gbps=throughput_target_gbps(),
            max_active_connections_override=pool_size,
            connect_timeout_ms=int(settings.connect_timeout_s * 1000),
        )
        return cls(client, credentials, parts.path, parts.netloc, control, encryption)

    def _request(
        self,
        method: str,
        key: str,
        headers: Mapping[str, str],
        query: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> http.HttpRequest:
        path = self._base_path + quote_key(key)
        ordered = canonical_query(query)
        target = path + ("?" + ordered if ordered else "")
        all_headers = http.HttpHeaders([("host", self._authority), *headers.items()])
        if body is not None:
            all_headers.set("content-length", str(len(body)))
        stream = io.BytesIO(body) if body is not None else None
        return http.HttpRequest(method, target, all_headers, stream)

    async def _run(
        self,
        kind: s3.S3RequestType,
        operation: str,
        request: http.HttpRequest,
        reply: _Reply,
        on_body: Callable[..., None] | None = None,
        on_progress: Callable[..., None] | None = None,
        on_finish: Callable[[BaseException | None], None] | None = None,
    ) -> None:
        """Start a request and wait until the CRT is done with it (also when cancelled:
        no callback touches a file descriptor after this returns)."""
        await self._credentials.refresh()
        loop = reply.loop
        finished: asyncio.Future[None] = loop.create_future()

        def on_done(
            error: BaseException | None = None,
            error_body: bytes | None = None,
            status_code: int | None = None,
            **_: Any,
        ) -> None:
            failure = reply.error(error, error_body, status_code)
            if on_finish is not None:
                loop.call_soon_threadsafe(on_finish, failure)
            loop.call_soon_threadsafe(_resolve, reply.head, failure)
            loop.call_soon_threadsafe(_resolve, finished, failure)

        crt_request = self._client.make_request(
            type=kind,
            # a PUT is one request: whether to upload in parts is the caller's decision
            multipart_upload_threshold=MAX_PUT if kind == s3.S3RequestType.PUT_OBJECT else None,
            request=request,
            operation_name=operation if kind == s3.S3RequestType.DEFAULT else None,
            on_headers=reply.on_headers,
            on_body=on_body,
            on_done=on_done,
            on_progress=on_progress,
        )
        self._pending.add(crt_request)
        try:
            await asyncio.shield(finished)
        except asyncio.CancelledError:
            crt_request.cancel()
            with contextlib.suppress(BaseException):
                await finished
            raise
        finally:
            self._pending.discard(crt_request)

    async def get(self, key: str) -> Got:
        loop = asyncio.get_running_loop()
        reply = _Reply(loop, "GetObject")
        body = _QueuedBody()

        def on_body(chunk: Any, offset: int, **_: Any) -> None:
            loop.call_soon_threadsafe(body.feed, bytes(chunk))

        request = self._request("GET", key, {"x-amz-checksum-mode": "ENABLED", **self._read})
        task = asyncio.ensure_future(
            self._run(
                s3.S3RequestType.GET_OBJECT, "GetObject", request, reply, on_body, None, body.finish
            )
        )
        body.task = task
        try:
            await asyncio.shield(reply.head)
        except BaseException:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise
        task.add_done_callback(lambda done: done.cancelled() or done.exception())
        return Got(info_from_headers(reply.headers), body)

    async def get_range(
        self,
        key: str,
        first: int,
        last: int,
        fd: int,
        if_match: str | None,
        digest: Digest | None,
        progress: Callable[[int], None],
    ) -> None:
        loop = asyncio.get_running_loop()
        reply = _Reply(loop, "GetObject")
        want = last + 1 - first
        received = [0]
        start: list[int | None] = [None]
        failed: list[BaseException] = []

        def on_body(chunk: Any, offset: int, **_: Any) -> None:
            # ``offset`` counts from the start of the whole object or of the range,
            # depending on the CRT's version: the first chunk tells which.
            try:
                base = start[0]
                if base is None:
                    base = start[0] = 0 if offset == first else first
                at = base + offset
                if at != first + received[0] or at + len(chunk) > last + 1:
                    raise TransferError(f"unexpected body piece at {at} of a ranged GET", "network")
                write_at(fd, chunk, at, digest)
                received[0] += len(chunk)
                loop.call_soon_threadsafe(progress, len(chunk))
            except BaseException as exc:
                failed.append(exc)
                raise

        headers = {"range": f"bytes={first}-{last}", **self._read}
        if if_match:
            headers["if-match"] = f'"{if_match}"'
        try:
            await self._run(
                s3.S3RequestType.GET_OBJECT,
                "GetObject",
                self._request("GET", key, headers),
                reply,
                on_body,
            )
        except TransferError:
            if failed:
                raise failed[0] from None
            raise
        if received[0] != want:
            raise TransferError(f"truncated body: {received[0]} of {want} bytes", "network")

    async def _put(
        self,
        key: str,
        body: bytes,
        headers: Mapping[str, str],
        operation: str,
        query: Mapping[str, str] | None = None,
    ) -> PutResult:
        reply = _Reply(asyncio.get_running_loop(), operation)
        kind = s3.S3RequestType.PUT_OBJECT if query is None else s3.S3RequestType.DEFAULT
        await self._run(kind, operation, self._request("PUT", key, headers, query, body), reply)
        return PutResult(reply.headers.get("etag", ""), reply.headers.get("x-amz-checksum-crc32"))

    async def put(
        self, key: str, body: bytes, crc32: str, metadata: Mapping[str, str]
    ) -> PutResult:
        return await self._put(key, body, self._put_headers(crc32, metadata), "PutObject")

    async def upload_part(
        self, key: str, upload_id: str, number: int, data: bytes, crc32: str
    ) -> PutResult:
        headers = {"x-amz-checksum-crc32": crc32, **self._read}
        query = {"partNumber": str(number), "uploadId": upload_id}
        return await self._put(key, data, headers, "UploadPart", query)

    async def close(self) -> None:
        for request in list(self._pending):
            request.cancel()
        # The native client goes with its last reference; waiting for its shutdown event
        # here would wait for the garbage collector (measured: it never came in 10 s).
        del self._client
