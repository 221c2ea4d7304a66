"""Object checksums: what S3 reports, running digests, and CRC combination for ranges
(awscrt's combine functions)."""

from __future__ import annotations

import base64
import hashlib
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

_MD5_RE = re.compile(r"[0-9a-fA-F]{32}")


class Digest(Protocol):
    def update(self, data: bytes | memoryview) -> None: ...
    def digest(self) -> bytes: ...


class _Crc:
    """A running CRC: CRC32 from zlib, CRC32C and CRC64NVME from awscrt (imported with
    the first such object: ~30 ms)."""

    def __init__(self, algorithm: str) -> None:
        self.value = 0
        self.size = 8 if algorithm == "CRC64NVME" else 4
        if algorithm == "CRC32":
            self._update: Any = zlib.crc32
        else:
            from awscrt import checksums as crt

            self._update = crt.crc32c if algorithm == "CRC32C" else crt.crc64nvme

    def update(self, data: bytes | memoryview) -> None:
        self.value = self._update(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(self.size, "big")


def new_digest(algorithm: str) -> Digest:
    if algorithm in ("CRC32", "CRC32C", "CRC64NVME"):
        return _Crc(algorithm)
    return hashlib.new(algorithm.lower())


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True, slots=True)
class Expected:
    """A checksum S3 reported: ``parts`` > 0 for a composite (checksum-of-checksums) value."""

    algorithm: str
    value: str
    parts: int = 0


_ALGORITHMS = ("CRC64NVME", "CRC32", "CRC32C", "SHA256", "SHA1")


def checksums_from_fields(response: Mapping[str, Any]) -> dict[str, str]:
    """Algorithm -> value from a response with botocore's ``Checksum<ALGORITHM>`` fields."""
    return {
        algorithm: str(response["Checksum" + algorithm])
        for algorithm in _ALGORITHMS
        if response.get("Checksum" + algorithm)
    }


def expected_checksum(reported: Mapping[str, str], checksum_type: str | None) -> Expected | None:
    """The verifiable checksum among those S3 reported (algorithm -> value), if any."""
    for algorithm in _ALGORITHMS:
        value = reported.get(algorithm)
        if not value:
            continue
        parts = 0
        head, sep, tail = value.rpartition("-")
        if sep and tail.isdigit():
            value, parts = head, int(tail)
        elif checksum_type == "COMPOSITE":
            return None  # a composite value without its part count cannot be checked
        return Expected(algorithm, value, parts)
    return None


def expected_from_response(response: Mapping[str, Any]) -> Expected | None:
    """The verifiable checksum in a GetObject/HeadObject response (botocore's fields)."""
    return expected_checksum(checksums_from_fields(response), response.get("ChecksumType"))


def is_md5_etag(etag: str | None) -> bool:
    if not etag:
        return False
    return _MD5_RE.fullmatch(etag.strip('"')) is not None


def crc_combine(algorithm: str, crc1: int, crc2: int, length2: int) -> int:
    """CRC of A+B from CRC(A), CRC(B) and len(B) (awscrt's combine functions)."""
    from awscrt import checksums as crt

    combine = {
        "CRC32": crt.combine_crc32,
        "CRC32C": crt.combine_crc32c,
        "CRC64NVME": crt.combine_crc64nvme,
    }[algorithm]
    return int(combine(crc1, crc2, length2))


def crc_of(algorithm: str, data: bytes) -> int:
    digest = _Crc(algorithm)
    digest.update(data)
    return digest.value
