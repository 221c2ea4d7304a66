"""The part the data-plane stores (direct, CRT) share: every request they do not serve
themselves goes to the botocore store, their control plane."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fsx_stage.transfer.models import Encryption
from fsx_stage.transfer.s3 import sse
from fsx_stage.transfer.s3.botocore_store import BotocoreStore
from fsx_stage.transfer.s3.store import ObjectInfo, Page, PutResult, UploadedPart


class OnControlPlane:
    """HEAD, listing, deletion and multipart uploads on ``control``; a subclass overrides
    the requests it sends itself. Holds the encryption as HTTP headers for those."""

    def __init__(self, control: BotocoreStore, encryption: Encryption) -> None:
        self._control = control
        self._read = sse.as_headers(sse.read_params(encryption))
        self._write = sse.as_headers(sse.write_params(encryption))

    def _put_headers(self, crc32: str, metadata: Mapping[str, str]) -> dict[str, str]:
        """The headers of a PutObject: metadata, its CRC32 and the encryption."""
        headers = {f"x-amz-meta-{name}": value for name, value in metadata.items()}
        headers["x-amz-checksum-crc32"] = crc32
        return {**headers, **self._write}

    async def head(self, key: str, part_number: int | None = None) -> ObjectInfo:
        return await self._control.head(key, part_number)

    async def list_page(self, prefix: str, token: str | None) -> Page:
        return await self._control.list_page(prefix, token)

    async def delete(self, key: str) -> None:
        await self._control.delete(key)

    async def create_multipart(self, key: str, metadata: Mapping[str, str]) -> str:
        return await self._control.create_multipart(key, metadata)

    async def upload_part(
        self, key: str, upload_id: str, number: int, data: bytes, crc32: str
    ) -> PutResult:
        return await self._control.upload_part(key, upload_id, number, data, crc32)

    async def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[UploadedPart]
    ) -> PutResult:
        return await self._control.complete_multipart(key, upload_id, parts)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        await self._control.abort_multipart(key, upload_id)
