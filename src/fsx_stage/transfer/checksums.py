"""Object checksums: what S3 reports, running digests, and CRC combination for ranges."""

from __future__ import annotations

import base64
import hashlib
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

_MD5_RE = re.compile(r"[0-9a-fA-F]{32}")
_CRC_POLY = {"CRC32": 0xEDB88320, "CRC32C": 0x82F63B78}


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


_FIELDS = ("CRC64NVME", "CRC32", "CRC32C", "SHA256", "SHA1")


def expected_from_response(response: Mapping[str, Any]) -> Expected | None:
    """The verifiable checksum in a GetObject/HeadObject response, if any."""
    for algorithm in _FIELDS:
        value = response.get("Checksum" + algorithm)
        if not value:
            continue
        value = str(value)
        parts = 0
        head, sep, tail = value.rpartition("-")
        if sep and tail.isdigit():
            value, parts = head, int(tail)
        elif response.get("ChecksumType") == "COMPOSITE":
            return None  # a composite value without its part count cannot be checked
        return Expected(algorithm, value, parts)
    return None


def is_md5_etag(etag: str | None) -> bool:
    if not etag:
        return False
    return _MD5_RE.fullmatch(etag.strip('"')) is not None


def _gf2_times(matrix: tuple[int, ...], vector: int) -> int:
    total = 0
    index = 0
    while vector:
        if vector & 1:
            total ^= matrix[index]
        vector >>= 1
        index += 1
    return total


def _gf2_square(matrix: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(_gf2_times(matrix, row) for row in matrix)


@lru_cache(maxsize=64)
def _shift_operator(poly: int, length: int) -> tuple[int, ...]:
    """The GF(2) matrix that advances a CRC over ``length`` zero bytes."""
    one_bit = (poly, *(1 << n for n in range(31)))
    op = _gf2_square(_gf2_square(one_bit))  # 4 zero bits
    result: tuple[int, ...] | None = None
    op = _gf2_square(op)  # one zero byte
    while length:
        if length & 1:
            result = op if result is None else tuple(_gf2_times(op, row) for row in result)
        length >>= 1
        if length:
            op = _gf2_square(op)
    assert result is not None
    return result


def crc_combine(algorithm: str, crc1: int, crc2: int, length2: int) -> int:
    """CRC of A+B from CRC(A), CRC(B) and len(B) (zlib's crc32_combine)."""
    if length2 == 0:
        return crc1
    return _gf2_times(_shift_operator(_CRC_POLY[algorithm], length2), crc1) ^ crc2


def crc_of(algorithm: str, data: bytes) -> int:
    digest = _Crc(algorithm)
    digest.update(data)
    return digest.value
