"""S3 -> filesystem: one object, streamed to its offset, verified, renamed into place."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fsx_stage.transfer.errors import ChecksumMismatch, TransferError, classify
from fsx_stage.transfer.local import lustre, posixmeta, safefs
from fsx_stage.transfer.models import TransferEvent
from fsx_stage.transfer.objects.context import Context, MoveResult, ObjectTransfer
from fsx_stage.transfer.s3 import checksums
from fsx_stage.transfer.s3.bodies import check_length, stream_to_fd
from fsx_stage.transfer.s3.checksums import Expected
from fsx_stage.transfer.s3.store import ObjectInfo

BLOCK = 1024 * 1024  # read back to verify: one block per pread
_WHOLE_OBJECT_ATTEMPTS = 3
# More ranges of one object in flight than this only add memory and contention.
_RANGES_PER_OBJECT = 16


def _encrypted_etag(ctx: Context, info: ObjectInfo) -> bool:
    """ETags of SSE-KMS and SSE-C objects are not the MD5 of the content."""
    return ctx.options.encryption.mode in ("sse-kms", "sse-c") or info.encrypted_etag


def _up_to_date(dir_fd: int, name: str, item: ObjectTransfer, exact: bool = False) -> bool:
    """Sync: the local file is what this object would produce.

    A file we downloaded carries the ETag it came from (an xattr): it is identical while
    that ETag, its size and its mtime are unchanged. Files without the record (or on
    filesystems without user xattrs) count as identical with equal size and a local
    mtime not older than the object's LastModified, as ``aws s3 sync`` does; with
    ``exact`` (``--exact-timestamps``) the mtime must equal LastModified to the second.
    """
    st = safefs.lstat_or_none(dir_fd, name)
    if st is None or not stat.S_ISREG(st.st_mode) or st.st_size != item.size:
        return False
    recorded = posixmeta.recorded_source(dir_fd, name)
    if recorded is not None:
        etag, size, mtime = recorded
        return (etag, size, mtime) == ((item.etag or "").strip('"'), st.st_size, st.st_mtime_ns)
    if item.mtime_ns is None:
        return False
    if exact:
        return st.st_mtime_ns // 1_000_000_000 == item.mtime_ns // 1_000_000_000
    return st.st_mtime_ns >= item.mtime_ns


async def download(ctx: Context, root_fd: int, item: ObjectTransfer) -> MoveResult:
    if item.rel.endswith("/"):
        return await _directory(ctx, root_fd, item)
    parts = safefs.split_relative(item.rel)
    parent = safefs.open_parent(root_fd, parts)
    try:
        name, exact = parts[-1], ctx.options.exact_timestamps
        if ctx.options.sync and item.size >= 0 and _up_to_date(parent, name, item, exact):
            return "skipped", 0
        if 0 <= item.size <= ctx.options.multipart_threshold:
            return "done", await _whole_with_retries(ctx, parent, name, item)
        head = await ctx.retry.run(lambda: ctx.store.head(item.key))
        size = head.size
        item.etag, item.mtime_ns = head.etag, head.mtime_ns
        if ctx.options.sync and item.size < 0:
            item.size = size
            if _up_to_date(parent, name, item, exact):
                return "skipped", 0
        item.size = size
        if size <= ctx.options.multipart_threshold:
            return "done", await _whole_with_retries(ctx, parent, name, item)
        for attempt in range(_WHOLE_OBJECT_ATTEMPTS):
            try:
                return "done", await _ranged(ctx, parent, name, item, head)
            except ChecksumMismatch:
                if attempt + 1 == _WHOLE_OBJECT_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")
    finally:
        os.close(parent)


async def _directory(ctx: Context, root_fd: int, item: ObjectTransfer) -> MoveResult:
    """A directory marker: the directory is made now; its mode and times are recorded
    for :func:`apply_directory_metadata` (sync leaves an existing directory alone)."""
    parts = safefs.split_relative(item.rel[:-1])
    if ctx.options.sync:
        with contextlib.suppress(FileNotFoundError):
            os.close(safefs.open_dir(root_fd, parts, create=False))
            return "skipped", 0
    os.close(safefs.open_dir(root_fd, parts))
    head = await ctx.retry.run(lambda: ctx.store.head(item.key))
    meta = posixmeta.from_metadata(head.metadata)
    if meta != posixmeta.PosixMeta():
        ctx.directory_meta.append((item.key, parts, meta))
    return "done", 0


def apply_directory_metadata(ctx: Context, root_fd: int) -> None:
    """Apply the recorded metadata of directory markers, deepest directory first.

    Call it once every file of the transfer is written: creating a file changes its
    directory's mtime, and a read-only mode would keep the files still to come out.
    Each directory is reopened from the root without following symlinks; a failure is a
    failed event for its marker key.
    """
    pending = sorted(ctx.directory_meta, key=lambda item: len(item[1]), reverse=True)
    ctx.directory_meta.clear()
    for key, parts, meta in pending:
        try:
            fd = safefs.open_dir(root_fd, parts, create=False)
            try:
                posixmeta.apply_to_fd(
                    fd,
                    meta,
                    default_mtime_ns=None,
                    preserve_owner=ctx.options.preserve_owner,
                    umask=ctx.umask,
                    directory=True,
                )
            finally:
                os.close(fd)
        except Exception as exc:
            category, reason = classify(exc)
            ctx.report(TransferEvent("failed", key, 0, 0, reason, category))


@dataclass(frozen=True, slots=True)
class _WholeCheck:
    """A checksum of the whole object, fed its bytes in order."""

    algorithm: str  # "MD5" (want is hex) or an S3 checksum algorithm (want is base64)
    want: str
    digest: checksums.Digest

    def verify(self, key: str) -> None:
        raw = self.digest.digest()
        got = raw.hex() if self.algorithm == "MD5" else checksums.b64(raw)
        if got != self.want:
            raise ChecksumMismatch(f"{self.algorithm} mismatch on {key!r}")


def _whole_check(ctx: Context, info: ObjectInfo, expected: Expected | None) -> _WholeCheck | None:
    """What checks the whole object (``info``: its GET or HEAD; ``expected``: the
    checksum S3 keeps): a full-object checksum, else the MD5 that the ETag of a
    single-part unencrypted object is; None when neither exists (size only)."""
    if expected is not None and not expected.parts:
        return _WholeCheck(
            expected.algorithm, expected.value, checksums.new_digest(expected.algorithm)
        )
    if checksums.is_md5_etag(info.etag) and not _encrypted_etag(ctx, info):
        return _WholeCheck("MD5", info.etag, hashlib.md5(usedforsecurity=False))
    return None


async def _whole_with_retries(ctx: Context, parent: int, name: str, item: ObjectTransfer) -> int:
    return await ctx.retry.run(lambda: _whole(ctx, parent, name, item))


def _finish(
    ctx: Context,
    parent: int,
    fd: int,
    tmp: str,
    name: str,
    meta: posixmeta.PosixMeta,
    etag: str,
    mtime_ns: int | None,
) -> None:
    posixmeta.apply_to_fd(
        fd,
        meta,
        default_mtime_ns=mtime_ns,
        preserve_owner=ctx.options.preserve_owner,
        umask=ctx.umask,
    )
    if etag:
        posixmeta.record_source(fd, etag, os.fstat(fd))
    if ctx.options.fsync:
        os.fsync(fd)
    safefs.commit(parent, tmp, name)
    if ctx.options.fsync:
        os.fsync(parent)


async def _whole(ctx: Context, parent: int, name: str, item: ObjectTransfer) -> int:
    """One GET, streamed to a temporary file and checked before it is renamed."""
    async with ctx.requests:
        got = await ctx.store.get(item.key)
        info, body = got.info, got.body
        with contextlib.closing(body):
            meta = posixmeta.from_metadata(info.metadata)
            length = info.size
            if meta.is_symlink:
                target = await body.read()
                check_length(item.key, len(target), length)
                _make_symlink(parent, name, target, meta)
                return len(target)
            check = None if got.verified else _whole_check(ctx, info, info.expected)
            digest = check.digest if check is not None else None
            tmp, fd = safefs.create_temp(parent, name)
            try:

                def progress(amount: int) -> None:
                    ctx.report(TransferEvent("bytes", item.key, amount, length))

                offset = await stream_to_fd(body, fd, 0, length, digest, progress, item.key)
                check_length(item.key, offset, length)
                if check is not None:
                    check.verify(item.key)
                _finish(ctx, parent, fd, tmp, name, meta, info.etag, info.mtime_ns)
                tmp = ""
            finally:
                os.close(fd)
                if tmp:
                    safefs.discard_temp(parent, tmp)
            return offset


def _make_symlink(parent: int, name: str, target: bytes, meta: posixmeta.PosixMeta) -> None:
    tmp = safefs.temp_name(name)
    safefs.discard_temp(parent, tmp)
    os.symlink(os.fsdecode(target), tmp, dir_fd=parent)
    try:
        if meta.mtime_ns is not None:
            atime = meta.atime_ns if meta.atime_ns is not None else meta.mtime_ns
            os.utime(tmp, ns=(atime, meta.mtime_ns), dir_fd=parent, follow_symlinks=False)
        safefs.commit(parent, tmp, name)
    except BaseException:
        safefs.discard_temp(parent, tmp)
        raise


async def _ranged(
    ctx: Context, parent: int, name: str, item: ObjectTransfer, head: ObjectInfo
) -> int:
    """Parallel ranged GETs, each streamed to its offset. CRCs and part checksums of the
    ranges are combined; a checksum that needs the bytes in order (the MD5 that the ETag
    of a single-part object is, a full-object SHA) follows the download on a thread,
    range after range as each is written."""
    size = item.size
    meta = posixmeta.from_metadata(head.metadata)
    if meta.is_symlink:
        raise TransferError(f"symlink object {item.key!r} is implausibly large", "invalid")
    expected = head.expected
    span = ctx.range_size_for(size)
    if expected is not None and expected.parts:
        span = await _original_part_size(ctx, item, expected)
        if span == 0:
            expected = None
            span = ctx.range_size_for(size)
    starts = list(range(0, size, span))
    crc_like = expected is not None and expected.algorithm in ("CRC32", "CRC32C", "CRC64NVME")
    per_range = expected is not None and (expected.parts > 0 or crc_like)
    digests: list[bytes] = [b""] * len(starts)
    whole = None if per_range else _whole_check(ctx, head, expected)
    written = [asyncio.Event() for _ in starts]
    tmp = safefs.temp_name(name)
    safefs.discard_temp(parent, tmp)
    if lustre.create_striped(parent, tmp, size, ctx.options.striping):
        fd = os.open(tmp, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    else:
        tmp, fd = safefs.create_temp(parent, name)
    try:
        os.ftruncate(fd, size)

        in_flight = asyncio.Semaphore(min(ctx.options.concurrency, _RANGES_PER_OBJECT))

        async def fetch(index: int) -> None:
            async with in_flight:
                await fetch_range(index)

        async def fetch_range(index: int) -> None:
            first = starts[index]
            last = min(size, first + span) - 1
            algorithm = expected.algorithm if (expected is not None and per_range) else None
            digests[index] = await ctx.retry.run(
                lambda: _get_range(ctx, fd, item, first, last, algorithm)
            )
            written[index].set()

        async def follow(digest: checksums.Digest) -> None:
            for index, first in enumerate(starts):
                await written[index].wait()
                await _off_loop(_digest_span, fd, digest, first, min(size, first + span))

        async with asyncio.TaskGroup() as group:
            for index in range(len(starts)):
                group.create_task(fetch(index))
            if whole is not None:
                group.create_task(follow(whole.digest))
        if whole is not None:
            whole.verify(item.key)
        elif expected is not None and per_range:
            _combine_ranges(item, expected, digests, starts, size)
        _finish(ctx, parent, fd, tmp, name, meta, item.etag or "", item.mtime_ns)
        tmp = ""
    finally:
        os.close(fd)
        if tmp:
            safefs.discard_temp(parent, tmp)
    return size


async def _original_part_size(ctx: Context, item: ObjectTransfer, expected: Expected) -> int:
    """The part size of a multipart object (from part 1), 0 if parts are not uniform."""
    part1 = await ctx.retry.run(lambda: ctx.store.head(item.key, part_number=1))
    span = part1.size
    if span <= 0 or -(-item.size // span) != expected.parts:
        return 0
    return span


async def _get_range(
    ctx: Context, fd: int, item: ObjectTransfer, first: int, last: int, algorithm: str | None
) -> bytes:
    """GET bytes ``first..last`` into ``fd`` at ``first``; the range's own digest when
    ``algorithm`` is given."""
    digest = checksums.new_digest(algorithm) if algorithm else None

    def progress(amount: int) -> None:
        ctx.report(TransferEvent("bytes", item.key, amount, item.size))

    async with ctx.requests:
        await ctx.store.get_range(item.key, first, last, fd, item.etag, digest, progress)
    return digest.digest() if digest is not None else b""


async def _off_loop(function: Callable[..., None], *args: Any) -> None:
    """Run ``function`` on a thread. A cancellation still waits for it to return: it
    reads a file descriptor that the caller closes as soon as this returns."""
    future = asyncio.get_running_loop().run_in_executor(None, function, *args)
    try:
        await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await future
        raise


def _digest_span(fd: int, digest: checksums.Digest, start: int, end: int) -> None:
    """Feed ``digest`` the bytes ``start..end`` of ``fd`` (from the page cache)."""
    while start < end:
        block = os.pread(fd, min(BLOCK, end - start), start)
        if not block:
            raise TransferError("the file shrank while it was being verified", "local_io")
        digest.update(block)
        start += len(block)


def _combine_ranges(
    item: ObjectTransfer, expected: Expected, digests: list[bytes], starts: list[int], size: int
) -> None:
    """Check the ranges' digests against a composite (part) checksum or a full-object
    CRC32/CRC32C/CRC64NVME, which S3 lets us combine from them."""
    if expected.parts:
        combined = checksums.new_digest(expected.algorithm)
        combined.update(b"".join(digests))
        got = checksums.b64(combined.digest())
    else:  # a full-object CRC
        crc = int.from_bytes(digests[0], "big")
        for index in range(1, len(starts)):
            length = min(size, starts[index] + (starts[1] - starts[0])) - starts[index]
            crc = checksums.crc_combine(
                expected.algorithm, crc, int.from_bytes(digests[index], "big"), length
            )
        got = checksums.b64(crc.to_bytes(len(digests[0]), "big"))
    if got != expected.value:
        raise ChecksumMismatch(f"{expected.algorithm} mismatch on {item.key!r}")
