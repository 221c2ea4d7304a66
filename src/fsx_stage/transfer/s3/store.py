"""What the transfer code asks of object storage, and the typed answers it gets.

One store serves one bucket for one process; it knows the encryption parameters, so the
callers never build request parameters or headers. Every S3 error reply is an
:class:`~fsx_stage.transfer.errors.S3Error`, whichever wire the store uses.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from fsx_stage.transfer.s3.checksums import Digest, Expected, expected_checksum

#: S3's checksum algorithms, as S3 names them in headers and fields (``ChecksumCRC32``).
CHECKSUM_ALGORITHMS = ("CRC64NVME", "CRC32", "CRC32C", "SHA256", "SHA1")


def mtime_ns_of(modified: datetime.datetime | None) -> int | None:
    return int(modified.timestamp() * 1_000_000_000) if modified is not None else None


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """An object's head: size, ETag (without quotes), user metadata and checksums."""

    size: int
    etag: str = ""
    last_modified: datetime.datetime | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    #: algorithm (``"CRC32"``...) -> the value S3 reports (base64, ``-N`` for composite)
    checksums: Mapping[str, str] = field(default_factory=dict)
    checksum_type: str | None = None
    #: S3 reported SSE-KMS or SSE-C: the ETag is not the MD5 of the content
    encrypted_etag: bool = False

    @property
    def mtime_ns(self) -> int | None:
        return mtime_ns_of(self.last_modified)

    @property
    def expected(self) -> Expected | None:
        """The checksum S3 keeps that we can verify, if any."""
        return expected_checksum(self.checksums, self.checksum_type)


@dataclass(frozen=True, slots=True)
class ListedObject:
    key: str
    size: int
    etag: str  # without quotes, "" if not known
    last_modified: datetime.datetime | None


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing; ``next_token`` is None on the last page."""

    objects: Sequence[ListedObject]
    next_token: str | None


@dataclass(frozen=True, slots=True)
class PutResult:
    """What S3 said about a stored object or part: its ETag and the CRC32 it computed."""

    etag: str  # as S3 sent it (quoted)
    crc32: str | None = None


@dataclass(frozen=True, slots=True)
class UploadedPart:
    number: int
    etag: str
    crc32: str


class Body(Protocol):
    """The body of a whole-object GET, read in pieces."""

    async def read(self, amount: int = -1) -> bytes: ...
    def close(self) -> None: ...


@dataclass(slots=True)
class Got:
    """A whole-object GET: the head, the body still to read, and whether the store itself
    verifies the full-object checksum while the body is read."""

    info: ObjectInfo
    body: Body
    verified: bool = False


class ObjectStore(Protocol):
    """Requests on the objects of one bucket (see the module docstring)."""

    async def head(self, key: str, part_number: int | None = None) -> ObjectInfo:
        """HeadObject with its checksums (of part ``part_number`` if given)."""
        ...

    async def get(self, key: str) -> Got:
        """GetObject of the whole object, with its checksums."""
        ...

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
        """Bytes ``first..last`` of ``key`` written to ``fd`` at ``first`` (all of them or
        an error), fed in order to ``digest``; ``progress`` gets byte counts as they land.
        ``if_match``: the ETag the object must still have."""
        ...

    async def put(
        self, key: str, body: bytes, crc32: str, metadata: Mapping[str, str]
    ) -> PutResult:
        """PutObject with its CRC32 (base64), which S3 checks."""
        ...

    async def list_page(self, prefix: str, token: str | None) -> Page: ...

    async def delete(self, key: str) -> None: ...

    async def create_multipart(self, key: str, metadata: Mapping[str, str]) -> str:
        """A new multipart upload with CRC32 part checksums; its upload id."""
        ...

    async def upload_part(
        self, key: str, upload_id: str, number: int, data: bytes, crc32: str
    ) -> PutResult: ...

    async def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[UploadedPart]
    ) -> PutResult: ...

    async def abort_multipart(self, key: str, upload_id: str) -> None: ...

    async def close(self) -> None: ...
