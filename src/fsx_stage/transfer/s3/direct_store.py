"""The direct store: small requests and ranged GETs on our own lean client
(:class:`~fsx_stage.transfer.s3.direct_client.FastS3`), the rest through botocore."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from fsx_stage.transfer.models import Encryption
from fsx_stage.transfer.s3.botocore_store import BotocoreStore
from fsx_stage.transfer.s3.checksums import Digest
from fsx_stage.transfer.s3.control_plane import OnControlPlane
from fsx_stage.transfer.s3.direct_client import FastS3
from fsx_stage.transfer.s3.store import Got, ObjectInfo, Page, PutResult


class DirectStore(OnControlPlane):
    """:class:`~fsx_stage.transfer.s3.store.ObjectStore`: HEAD, GET, ranged GET, PUT and
    (where the server lists as we expect) listing on the direct client; multipart
    uploads, deletion and otherwise listing on the control plane."""

    def __init__(self, fast: FastS3, control: BotocoreStore, encryption: Encryption) -> None:
        super().__init__(control, encryption)
        self._fast = fast

    async def head(self, key: str, part_number: int | None = None) -> ObjectInfo:
        headers = dict(self._read)
        if part_number is None:
            headers["x-amz-checksum-mode"] = "ENABLED"
        return await self._fast.head_object(key, headers, part_number)

    async def get(self, key: str) -> Got:
        return await self._fast.get_object(key, self._read)

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
        headers = {"if-match": f'"{if_match}"'} if if_match else {}
        await self._fast.get_range(
            key, first, last, {**headers, **self._read}, fd, digest, progress
        )

    async def put(
        self, key: str, body: bytes, crc32: str, metadata: Mapping[str, str]
    ) -> PutResult:
        return await self._fast.put_object(key, body, self._put_headers(crc32, metadata))

    async def list_page(self, prefix: str, token: str | None) -> Page:
        if self._fast.can_list:
            return await self._fast.list_objects_v2(prefix, token)
        return await super().list_page(prefix, token)

    async def close(self) -> None:
        await self._fast.close()
