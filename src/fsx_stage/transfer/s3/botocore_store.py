"""The store over aiobotocore: every request through botocore's pipeline.

It serves everything where the direct client does not attach (proxies, endpoint layouts
it does not know), and the control plane of the other stores (multipart, deletion, and
listing where the direct client cannot list).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from botocore.exceptions import ClientError

from fsx_stage.transfer.errors import S3Error
from fsx_stage.transfer.models import Encryption
from fsx_stage.transfer.s3 import sse
from fsx_stage.transfer.s3.bodies import check_length, stream_to_fd
from fsx_stage.transfer.s3.checksums import Digest, checksums_from_fields
from fsx_stage.transfer.s3.store import Got, ListedObject, ObjectInfo, Page, PutResult, UploadedPart


def info_from_response(response: Mapping[str, Any]) -> ObjectInfo:
    """An :class:`ObjectInfo` from a botocore HeadObject/GetObject response."""
    return ObjectInfo(
        size=int(response.get("ContentLength", -1)),
        etag=str(response.get("ETag") or "").strip('"'),
        last_modified=response.get("LastModified"),
        metadata=response.get("Metadata") or {},
        checksums=checksums_from_fields(response),
        checksum_type=response.get("ChecksumType"),
        encrypted_etag=response.get("ServerSideEncryption") == "aws:kms"
        or bool(response.get("SSECustomerAlgorithm")),
    )


def _verified_by_botocore(body: Any) -> bool:
    """Whether botocore checks the full-object checksum as ``body`` is read."""
    module = sys.modules.get("aiobotocore.httpchecksum")
    return module is not None and isinstance(body, module.AioStreamingChecksumBody)


class BotocoreStore:
    """:class:`~fsx_stage.transfer.s3.store.ObjectStore` over an aiobotocore client."""

    def __init__(self, client: Any, bucket: str, encryption: Encryption) -> None:
        self._client = client
        self._bucket = bucket
        self._read = sse.read_params(encryption)
        self._write = sse.write_params(encryption)

    @property
    def client(self) -> Any:
        """The aiobotocore client (or its lazy stand-in)."""
        return self._client

    async def _call(self, operation: str, **params: Any) -> Any:
        try:
            return await getattr(self._client, operation)(Bucket=self._bucket, **params)
        except ClientError as exc:
            raise S3Error.from_client_error(exc) from None

    async def head(self, key: str, part_number: int | None = None) -> ObjectInfo:
        which: dict[str, Any] = (
            {"PartNumber": part_number} if part_number is not None else {"ChecksumMode": "ENABLED"}
        )
        return info_from_response(await self._call("head_object", Key=key, **which, **self._read))

    async def get(self, key: str) -> Got:
        response = await self._call("get_object", Key=key, ChecksumMode="ENABLED", **self._read)
        body = response["Body"]
        return Got(info_from_response(response), body, _verified_by_botocore(body))

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
        condition = {"IfMatch": f'"{if_match}"'} if if_match else {}
        response = await self._call(
            "get_object", Key=key, Range=f"bytes={first}-{last}", **condition, **self._read
        )
        body = response["Body"]
        reported = [0]

        def counted(amount: int) -> None:
            reported[0] += amount
            progress(amount)

        with contextlib.closing(body):
            got = await stream_to_fd(body, fd, first, last + 1 - first, digest, counted, key)
        check_length(key, got, last + 1 - first)
        if got > reported[0]:  # a short body is reported at its end
            progress(got - reported[0])

    async def put(
        self, key: str, body: bytes, crc32: str, metadata: Mapping[str, str]
    ) -> PutResult:
        response = await self._call(
            "put_object",
            Key=key,
            Body=body,
            ContentLength=len(body),
            ChecksumCRC32=crc32,
            Metadata=dict(metadata),
            **self._write,
        )
        return PutResult(str(response.get("ETag") or ""), response.get("ChecksumCRC32"))

    async def list_page(self, prefix: str, token: str | None) -> Page:
        params: dict[str, Any] = {"Prefix": prefix, "MaxKeys": 1000}
        if token:
            params["ContinuationToken"] = token
        page = await self._call("list_objects_v2", **params)
        objects = [
            ListedObject(
                item["Key"],
                int(item.get("Size", -1)),
                str(item.get("ETag") or "").strip('"'),
                item.get("LastModified"),
            )
            for item in page.get("Contents") or ()
        ]
        more = bool(page.get("IsTruncated"))
        return Page(objects, (page.get("NextContinuationToken") or None) if more else None)

    async def delete(self, key: str) -> None:
        await self._call("delete_object", Key=key)

    async def create_multipart(self, key: str, metadata: Mapping[str, str]) -> str:
        created = await self._call(
            "create_multipart_upload",
            Key=key,
            ChecksumAlgorithm="CRC32",
            Metadata=dict(metadata),
            **self._write,
        )
        return str(created["UploadId"])

    async def upload_part(
        self, key: str, upload_id: str, number: int, data: bytes, crc32: str
    ) -> PutResult:
        response = await self._call(
            "upload_part",
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=data,
            ContentLength=len(data),
            ChecksumCRC32=crc32,
            **self._read,
        )
        return PutResult(str(response.get("ETag") or ""), response.get("ChecksumCRC32"))

    async def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[UploadedPart]
    ) -> PutResult:
        listed = [
            {"PartNumber": part.number, "ETag": part.etag, "ChecksumCRC32": part.crc32}
            for part in parts
        ]
        response = await self._call(
            "complete_multipart_upload",
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": listed},
            **self._read,
        )
        return PutResult(str(response.get("ETag") or ""), response.get("ChecksumCRC32"))

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        await self._call("abort_multipart_upload", Key=key, UploadId=upload_id)

    async def close(self) -> None:
        """The client belongs to whoever created it."""
