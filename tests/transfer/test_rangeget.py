"""Ranged GETs on threads (large downloads): bytes land at their offsets, S3 errors carry
their code, and a kept-alive connection the server dropped is replaced silently."""

from __future__ import annotations

import os
import socket
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop
from tests.transfer.conftest import settings_for

from fsx_stage.transfer.errors import S3Error
from fsx_stage.transfer.s3.botocore_client import create_client
from fsx_stage.transfer.s3.checksums import new_digest
from fsx_stage.transfer.s3.direct_client import FastS3

T = TypeVar("T")
MiB = 1024 * 1024


def _with_fast(
    s3_server: Any, bucket: str, use: Callable[[FastS3], Awaitable[T]], threads: int = 8
) -> T:
    async def main() -> T:
        async with create_client(settings_for(s3_server), 8) as client:
            fast = await FastS3.attach(client, bucket, threads, 10, 60)
            assert fast is not None
            try:
                return await use(fast)
            finally:
                await fast.close()

    return uvloop.run(main())


@pytest.fixture
def blob(s3_client: Any, bucket: str) -> bytes:
    data = os.urandom(3 * MiB + 5)
    s3_client.put_object(Bucket=bucket, Key="blob", Body=data)
    return data


def test_ranges_land_at_their_offsets_with_their_crc(
    s3_server: Any, bucket: str, blob: bytes, tmp_path: Path
) -> None:
    target = tmp_path / "out"
    fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o600)
    os.ftruncate(fd, len(blob))
    spans = [(0, MiB - 1), (MiB, 3 * MiB - 1), (3 * MiB, len(blob) - 1)]
    reported: list[int] = []

    async def fetch(fast: FastS3) -> list[bytes]:
        crcs = []
        for first, last in spans:
            digest = new_digest("CRC32")
            await fast.get_range("blob", first, last, {}, fd, digest, reported.append)
            crcs.append(digest.digest())
        return crcs

    try:
        crcs = _with_fast(s3_server, bucket, fetch)
    finally:
        os.close(fd)
    assert target.read_bytes() == blob
    assert sum(reported) == len(blob)
    for (first, last), crc in zip(spans, crcs, strict=True):
        assert int.from_bytes(crc, "big") == zlib.crc32(blob[first : last + 1])


def test_an_s3_error_is_an_s3_error_with_its_code(
    s3_server: Any, bucket: str, tmp_path: Path
) -> None:
    fd = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT, 0o600)

    async def fetch(fast: FastS3) -> None:
        await fast.get_range("missing", 0, 99, {}, fd, None, lambda _: None)

    try:
        with pytest.raises(S3Error) as caught:
            _with_fast(s3_server, bucket, fetch)
    finally:
        os.close(fd)
    assert (caught.value.code, caught.value.status) == ("NoSuchKey", 404)


def test_a_dropped_keep_alive_connection_is_replaced(
    s3_server: Any, bucket: str, blob: bytes, tmp_path: Path
) -> None:
    fd = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT, 0o600)
    os.ftruncate(fd, len(blob))

    async def fetch(fast: FastS3) -> None:
        await fast.get_range("blob", 0, MiB - 1, {}, fd, None, lambda _: None)
        ranges = fast._ranges
        assert ranges is not None
        (conn,) = ranges._connections  # one thread, one kept-alive connection
        assert conn.sock is not None
        broken = conn.sock
        broken.shutdown(socket.SHUT_RDWR)  # as if the server had closed it while idle
        await fast.get_range("blob", MiB, len(blob) - 1, {}, fd, None, lambda _: None)
        (fresh,) = ranges._connections  # the same thread, a new connection
        assert fresh.sock is not None and fresh.sock is not broken

    try:
        _with_fast(s3_server, bucket, fetch, threads=1)
        assert os.pread(fd, len(blob) + 1, 0) == blob
    finally:
        os.close(fd)
