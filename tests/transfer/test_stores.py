"""The object store contract, run against every store on a real SeaweedFS: the same
requests give the same typed answers (and the same errors) whichever wire serves them."""

from __future__ import annotations

import base64
import hashlib
import os
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop
from tests.transfer.conftest import settings_for

from fsx_stage.transfer.errors import S3Error, classify
from fsx_stage.transfer.models import Encryption
from fsx_stage.transfer.s3.checksums import new_digest
from fsx_stage.transfer.s3.choose import STORES, open_store
from fsx_stage.transfer.s3.crt_store import CrtStore
from fsx_stage.transfer.s3.direct_store import DirectStore
from fsx_stage.transfer.s3.store import ObjectStore, UploadedPart

T = TypeVar("T")
MiB = 1024 * 1024
KEY = base64.b64encode(b"s" * 32).decode()


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


@pytest.fixture(params=STORES)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def with_store(s3_server: Any, bucket: str, kind: str) -> Callable[..., Any]:
    def use(body: Callable[[ObjectStore], Awaitable[T]], encryption: Encryption | None = None) -> T:
        async def main() -> T:
            settings = settings_for(s3_server)
            async with open_store(
                settings, bucket, encryption or Encryption(), 8, kind=kind
            ) as store:
                expected = {"direct": DirectStore, "crt": CrtStore}.get(kind)
                if expected is not None:  # the store asked for, not a fallback
                    assert isinstance(store, expected)
                return await body(store)

        return uvloop.run(main())

    return use


def test_put_then_head_and_get(with_store: Callable[..., Any]) -> None:
    data = os.urandom(100_000)

    async def body(store: ObjectStore) -> Any:
        put = await store.put("d/k ü+", data, crc32_b64(data), {"fsx-mode": "33188"})
        head = await store.head("d/k ü+")
        got = await store.get("d/k ü+")
        try:
            read = b""
            while chunk := await got.body.read(64 * 1024):
                read += chunk
        finally:
            got.body.close()
        return put, head, got.info, read

    put, head, info, read = with_store(body)
    assert read == data
    md5 = hashlib.md5(data).hexdigest()
    assert put.etag.strip('"') == md5 and put.crc32 in (None, crc32_b64(data))
    for seen in (head, info):
        assert (seen.size, seen.etag, seen.metadata) == (len(data), md5, {"fsx-mode": "33188"})
        assert seen.last_modified is not None and not seen.encrypted_etag
        assert seen.checksums.get("CRC32") in (None, crc32_b64(data))


def test_a_range_lands_at_its_offset_with_its_digest_and_progress(
    with_store: Callable[..., Any], tmp_path: Path
) -> None:
    data = os.urandom(3 * MiB + 17)
    fd = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT, 0o600)
    os.ftruncate(fd, len(data))
    progress: list[int] = []
    first, last = MiB + 3, 3 * MiB + 9

    async def body(store: ObjectStore) -> bytes:
        await store.put("blob", data, crc32_b64(data), {})
        etag = (await store.head("blob")).etag
        digest = new_digest("CRC32")
        await store.get_range("blob", first, last, fd, etag, digest, progress.append)
        return digest.digest()

    try:
        crc = with_store(body)
        assert os.pread(fd, last + 1 - first, first) == data[first : last + 1]
        assert os.pread(fd, first, 0) == bytes(first)  # nothing outside the range
    finally:
        os.close(fd)
    assert int.from_bytes(crc, "big") == zlib.crc32(data[first : last + 1])
    assert sum(progress) == last + 1 - first


def test_a_range_of_a_changed_object_fails_its_precondition(
    with_store: Callable[..., Any], tmp_path: Path
) -> None:
    fd = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT, 0o600)

    async def body(store: ObjectStore) -> None:
        await store.put("k", b"x" * 1000, crc32_b64(b"x" * 1000), {})
        await store.get_range("k", 0, 99, fd, "0" * 32, None, lambda _: None)

    try:
        with pytest.raises(S3Error) as caught:
            with_store(body)
    finally:
        os.close(fd)
    assert (caught.value.code, caught.value.status) == ("PreconditionFailed", 412)
    assert classify(caught.value)[0] == "other"


def test_a_missing_key_is_not_found_on_every_request(
    with_store: Callable[..., Any], tmp_path: Path
) -> None:
    fd = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT, 0o600)
    requests: list[Callable[[ObjectStore], Awaitable[Any]]] = [
        lambda store: store.head("missing"),
        lambda store: store.get("missing"),
        lambda store: store.get_range("missing", 0, 9, fd, None, None, lambda _: None),
    ]
    errors = []
    try:
        for request in requests:

            async def body(store: ObjectStore, request: Any = request) -> None:
                await request(store)

            with pytest.raises(S3Error) as caught:
                with_store(body)
            errors.append(caught.value)
    finally:
        os.close(fd)
    assert [(e.status, classify(e)[0]) for e in errors] == [(404, "not_found")] * 3
    assert [e.code for e in errors[1:]] == ["NoSuchKey", "NoSuchKey"]


def test_listing_pages_and_deletion(with_store: Callable[..., Any]) -> None:
    async def body(store: ObjectStore) -> tuple[list[str], list[str]]:
        for key in ("p/a", "p/b/c", "p/b0", "q/d"):
            await store.put(key, key.encode(), crc32_b64(key.encode()), {})
        page = await store.list_page("p/", None)
        assert page.next_token is None
        listed = [(o.key, o.size, o.etag) for o in page.objects]
        assert listed == [
            (k, len(k), hashlib.md5(k.encode()).hexdigest()) for k in ("p/a", "p/b/c", "p/b0")
        ]
        assert all(o.last_modified is not None for o in page.objects)
        await store.delete("p/a")
        after = await store.list_page("p/", None)
        return [o.key for o in page.objects], [o.key for o in after.objects]

    before, after = with_store(body)
    assert after == [k for k in before if k != "p/a"]


def test_multipart_upload_and_abort(with_store: Callable[..., Any]) -> None:
    parts = [os.urandom(5 * MiB), os.urandom(MiB + 1)]

    async def body(store: ObjectStore) -> tuple[bytes, int]:
        upload = await store.create_multipart("mp", {"fsx-mtime": "1"})
        done = []
        for number, data in enumerate(parts, 1):
            result = await store.upload_part("mp", upload, number, data, crc32_b64(data))
            assert result.crc32 in (None, crc32_b64(data))
            done.append(UploadedPart(number, result.etag, crc32_b64(data)))
        await store.complete_multipart("mp", upload, done)
        got = await store.get("mp")
        data = await got.body.read()
        got.body.close()
        assert got.info.metadata == {"fsx-mtime": "1"}
        abandoned = await store.create_multipart("gone", {})
        await store.abort_multipart("gone", abandoned)
        with pytest.raises(S3Error) as caught:
            await store.upload_part("gone", abandoned, 1, b"x", crc32_b64(b"x"))
        return data, caught.value.status

    data, status = with_store(body)
    assert data == b"".join(parts)
    assert status == 404


def test_sse_c_objects_need_the_key(with_store: Callable[..., Any], tmp_path: Path) -> None:
    data = os.urandom(2 * MiB)
    fd = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT, 0o600)
    os.ftruncate(fd, len(data))
    sse_c = Encryption(mode="sse-c", customer_key=KEY)

    async def encrypted(store: ObjectStore) -> Any:
        await store.put("secret", data, crc32_b64(data), {})
        await store.get_range("secret", 0, len(data) - 1, fd, None, None, lambda _: None)
        return await store.head("secret")

    async def plain(store: ObjectStore) -> None:
        await store.head("secret")

    try:
        info = with_store(encrypted, sse_c)
        assert os.pread(fd, len(data), 0) == data
    finally:
        os.close(fd)
    assert info.encrypted_etag and info.size == len(data)
    with pytest.raises(S3Error) as caught:
        with_store(plain)
    assert caught.value.status == 400


def test_a_put_larger_than_a_part_is_still_one_request(with_store: Callable[..., Any]) -> None:
    """Whether to upload in parts is the caller's decision: a PUT never becomes a
    multipart upload behind its back (its ETag stays the body's MD5, its CRC32 ours)."""
    data = os.urandom(9 * MiB)

    async def body(store: ObjectStore) -> Any:
        return await store.put("big", data, crc32_b64(data), {})

    put = with_store(body)
    assert put.etag.strip('"') == hashlib.md5(data).hexdigest()
    assert put.crc32 in (None, crc32_b64(data))


@pytest.mark.timeout(120)
def test_worker_processes_of_a_crt_process_are_started_fresh(
    run: Any, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CRT's native threads make forking unsafe (a forked child hangs in its first
    request): a process that loaded it starts its workers as new processes."""
    from tests.transfer.conftest import tree

    monkeypatch.setenv("FSX_STAGE_STORE", "crt")
    source = tmp_path / "src"
    source.mkdir()
    for index in range(40):
        (source / f"f{index}").write_bytes(os.urandom(100))
    up = run(source, f"s3://{bucket}/w/", recursive=True, workers=2, concurrency=2)
    down = run(f"s3://{bucket}/w/", tmp_path / "dst", recursive=True, workers=2, concurrency=2)
    assert (up.objects_done, down.objects_done) == (40, 40)
    assert tree(tmp_path / "dst") == tree(source)
