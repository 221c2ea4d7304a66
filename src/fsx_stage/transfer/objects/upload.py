"""Filesystem -> S3: one file, with its POSIX metadata and a checksum S3 must confirm."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import hashlib
import os
import stat
import zlib

from fsx_stage.transfer.errors import ChecksumMismatch, ObjectChanged, S3Error, TransferError
from fsx_stage.transfer.local import posixmeta, safefs
from fsx_stage.transfer.models import TransferEvent
from fsx_stage.transfer.objects.context import Context, MoveResult, ObjectTransfer
from fsx_stage.transfer.s3 import checksums
from fsx_stage.transfer.s3.store import PutResult, UploadedPart

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _crc32_b64(data: bytes | memoryview) -> str:
    return checksums.b64(zlib.crc32(data).to_bytes(4, "big"))


def _confirmed(result: PutResult, sent_crc: str, body: bytes | memoryview) -> None:
    """S3 must echo the checksum we sent (or, for servers that do not, the body's MD5)."""
    echoed = result.crc32
    if echoed is not None:
        if echoed != sent_crc:
            raise ChecksumMismatch(f"S3 stored CRC32 {echoed}, we sent {sent_crc}")
        return
    etag = result.etag.strip('"')
    if etag != hashlib.md5(body, usedforsecurity=False).hexdigest():
        raise ChecksumMismatch("S3 confirmed neither our CRC32 nor the body's MD5")


def _check_composite(result: PutResult, parts: list[UploadedPart]) -> None:
    """Where S3 reports the object's checksum-of-part-checksums, it must be ours."""
    reported = result.crc32 or ""
    if not reported:
        return
    raw = b"".join(base64.b64decode(part.crc32) for part in parts)
    expected = _crc32_b64(raw)
    if reported.split("-")[0] != expected:
        raise ChecksumMismatch(f"S3 stored composite CRC32 {reported}, expected {expected}")


def _same_file(before: os.stat_result, after: os.stat_result, what: str) -> None:
    if (before.st_size, before.st_mtime_ns, before.st_ino) != (
        after.st_size,
        after.st_mtime_ns,
        after.st_ino,
    ):
        raise ObjectChanged(f"{what} changed while it was being uploaded")


async def upload(ctx: Context, root_fd: int, item: ObjectTransfer) -> MoveResult:
    is_dir = item.rel.endswith("/")
    parts = safefs.split_relative(item.rel.rstrip("/"))
    parent = safefs.open_parent(root_fd, parts, create=False)
    try:
        name = parts[-1]
        try:
            fd = os.open(name, _OPEN_FLAGS | (os.O_DIRECTORY if is_dir else 0), dir_fd=parent)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            return await _upload_symlink(ctx, parent, name, item)
        try:
            st = os.fstat(fd)
            if is_dir:
                return await _put_small(ctx, item, b"", st)
            if not stat.S_ISREG(st.st_mode):
                raise TransferError(f"{item.rel!r} is not a regular file", "invalid")
            if ctx.options.sync and await _exists_identical(ctx, item, st):
                return "skipped", 0
            if st.st_size <= ctx.options.multipart_threshold:
                return await ctx.retry.run(lambda: _upload_small(ctx, fd, item, st))
            return "done", await _multipart(ctx, fd, item, st)
        finally:
            os.close(fd)
    finally:
        os.close(parent)


async def _exists_identical(ctx: Context, item: ObjectTransfer, st: os.stat_result) -> bool:
    """Sync: the object has this file's size and mtime (from its file-mtime metadata)."""
    try:
        head = await ctx.retry.run(lambda: ctx.store.head(item.key))
    except S3Error as exc:
        if exc.status == 404:
            return False
        raise
    meta = posixmeta.from_metadata(head.metadata)
    return head.size == st.st_size and meta.mtime_ns == st.st_mtime_ns


async def _upload_symlink(ctx: Context, parent: int, name: str, item: ObjectTransfer) -> MoveResult:
    st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    target = os.fsencode(os.readlink(name, dir_fd=parent))
    return await _put_small(ctx, item, target, st)


async def _put_small(
    ctx: Context, item: ObjectTransfer, body: bytes, st: os.stat_result
) -> MoveResult:
    async def attempt() -> MoveResult:
        await _put(ctx, item, body, st)
        return "done", len(body)

    return await ctx.retry.run(attempt)


async def _upload_small(
    ctx: Context, fd: int, item: ObjectTransfer, st: os.stat_result
) -> MoveResult:
    size = st.st_size
    await ctx.budget.acquire(size)
    try:
        body = os.pread(fd, size, 0) if size else b""
        _same_file(st, os.fstat(fd), repr(item.rel))
        if len(body) != size:
            raise ObjectChanged(f"{item.rel!r} changed while it was being uploaded")
        await _put(ctx, item, body, st)
    finally:
        await ctx.budget.release(size)
    return "done", size


async def _put(ctx: Context, item: ObjectTransfer, body: bytes, st: os.stat_result) -> None:
    crc = _crc32_b64(body)
    metadata = posixmeta.to_metadata(st)
    async with ctx.requests:
        result = await ctx.store.put(item.key, body, crc, metadata)
    _confirmed(result, crc, body)


async def _multipart(ctx: Context, fd: int, item: ObjectTransfer, st: os.stat_result) -> int:
    size = st.st_size
    span = ctx.part_size_for(size)
    metadata = posixmeta.to_metadata(st)
    upload_id = await ctx.retry.run(lambda: ctx.store.create_multipart(item.key, metadata))
    starts = list(range(0, size, span))
    parts: list[UploadedPart] = [UploadedPart(0, "", "") for _ in starts]

    async def send(index: int) -> None:
        first = starts[index]
        length = min(size, first + span) - first
        await ctx.budget.acquire(length)
        try:
            data = os.pread(fd, length, first)
            if len(data) != length:
                raise ObjectChanged(f"{item.rel!r} shrank while it was being uploaded")
            crc = _crc32_b64(data)

            async def attempt() -> PutResult:
                async with ctx.requests:
                    result = await ctx.store.upload_part(item.key, upload_id, index + 1, data, crc)
                _confirmed(result, crc, data)
                return result

            result = await ctx.retry.run(attempt)
        finally:
            await ctx.budget.release(length)
        parts[index] = UploadedPart(index + 1, result.etag, crc)
        ctx.report(TransferEvent("bytes", item.key, length, size))

    try:
        async with asyncio.TaskGroup() as group:
            for index in range(len(starts)):
                group.create_task(send(index))
        _same_file(st, os.fstat(fd), repr(item.rel))
        completed = await ctx.retry.run(
            lambda: ctx.store.complete_multipart(item.key, upload_id, parts)
        )
        _check_composite(completed, parts)
    except BaseException:
        with contextlib.suppress(Exception):
            await asyncio.shield(ctx.store.abort_multipart(item.key, upload_id))
        raise
    return size
