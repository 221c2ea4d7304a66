"""Writing a streamed response body to its offset of a file, feeding its digest."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable

from fsx_stage.transfer.errors import TransferError
from fsx_stage.transfer.s3.checksums import Digest
from fsx_stage.transfer.s3.store import Body

CHUNK = 256 * 1024  # read/write unit of a streamed body (bounds memory per request)
_PROGRESS_STEP = 8 * 1024 * 1024


async def stream_to_fd(
    body: Body,
    fd: int,
    first: int,
    limit: int,
    digest: Digest | None,
    progress: Callable[[int], None],
    key: str,
) -> int:
    """Write ``body`` to ``fd`` from offset ``first`` on (at most ``limit`` bytes), feeding
    ``digest`` in order; return the number of bytes written. Small bodies are written at
    once; pieces of :data:`CHUNK` bytes are written and hashed on a thread while the next
    one arrives (both release the GIL, so a large body does not hold the event loop).
    The progress of a body of several pieces is reported every few MiB."""
    loop = asyncio.get_running_loop()
    writing: asyncio.Future[None] | None = None
    offset = reported = first
    try:
        while chunk := await body.read(CHUNK):
            if offset + len(chunk) > first + limit:
                raise TransferError(f"more data than announced for {key!r}", "network")
            if writing is not None:
                await writing
                writing = None
            if len(chunk) >= CHUNK:
                writing = loop.run_in_executor(None, write_at, fd, chunk, offset, digest)
            else:
                write_at(fd, chunk, offset, digest)
            offset += len(chunk)
            if offset - reported >= _PROGRESS_STEP:
                progress(offset - reported)
                reported = offset
        if writing is not None:
            await writing
    except BaseException:
        if writing is not None:  # the thread must be done with fd before it is closed
            with contextlib.suppress(BaseException):
                await asyncio.shield(writing)
        raise
    if reported != first and offset > reported:
        progress(offset - reported)
    return offset - first


def write_at(fd: int, data: bytes, offset: int, digest: Digest | None) -> None:
    """Write ``data`` at ``offset`` (all of it) and feed it to ``digest``."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
    if digest is not None:
        digest.update(data)


def check_length(key: str, got: int, want: int) -> None:
    if got != want:
        raise TransferError(f"truncated body for {key!r}: {got} of {want} bytes", "network")
