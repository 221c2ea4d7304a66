"""``s3://bucket/key`` URLs, shared by directives, policy and the transfer core."""

from __future__ import annotations

import re
from dataclasses import dataclass

# S3 bucket naming rules (the general-purpose bucket subset we accept).
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


class S3UrlError(ValueError):
    """An ``s3://`` URL that cannot be parsed; the message says why."""


@dataclass(frozen=True, slots=True)
class S3Url:
    """A parsed ``s3://bucket/key`` URL. A key ending in ``/`` (or empty) is a prefix."""

    bucket: str
    key: str = ""

    @property
    def is_prefix(self) -> bool:
        return self.key == "" or self.key.endswith("/")

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def join(self, relative: str) -> S3Url:
        """The URL of ``relative`` under this prefix."""
        base = self.key if self.is_prefix else self.key + "/"
        return S3Url(bucket=self.bucket, key=base + relative)

    @classmethod
    def parse(cls, text: str) -> S3Url:
        if not text.startswith("s3://"):
            raise S3UrlError(f"expected an s3://bucket/key URL, got {text!r}")
        rest = text[len("s3://") :]
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise S3UrlError(f"missing bucket name in {text!r}")
        if not _BUCKET_RE.match(bucket) or ".." in bucket:
            raise S3UrlError(
                f"invalid bucket name {bucket!r} in {text!r}: expected 3-63 characters "
                "of lowercase letters, digits, '.' and '-'"
            )
        if len(key.encode("utf-8", "surrogatepass")) > 1024:
            raise S3UrlError(f"key longer than 1024 bytes in {text[:80]!r}...")
        return cls(bucket=bucket, key=key)


def is_s3_url(text: str) -> bool:
    return text.startswith("s3://")
