"""Pydantic models at the boundary of the transfer core: settings, options, results."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from fsx_stage.filters import Filter

MiB = 1024 * 1024
GiB = 1024 * MiB

FailureCategory = Literal[
    "not_found",
    "access_denied",
    "checksum",
    "network",
    "throttled",
    "local_io",
    "unsafe_key",
    "invalid",
    "other",
]
EventKind = Literal["queued", "bytes", "done", "skipped", "failed"]


class StaticCredentials(BaseModel):
    """Credentials resolved elsewhere (e.g. by the hooks, as root) and handed to us."""

    model_config = ConfigDict(frozen=True)

    access_key_id: str
    secret_access_key: SecretStr
    session_token: SecretStr | None = None


class S3Settings(BaseModel):
    """How to reach S3. ``None`` fields fall back to the standard AWS chain.

    ``endpoint_url=None`` honours ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL`` and the
    profile's config; ``credentials=None`` uses the default credential chain.
    """

    model_config = ConfigDict(frozen=True)

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    credentials: StaticCredentials | None = None
    max_attempts: int = Field(default=8, ge=1, le=50)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    read_timeout_s: float = Field(default=60.0, gt=0)


class Encryption(BaseModel):
    """Server-side encryption, applied to both directions.

    ``customer_key`` (SSE-C) is the base64 text of exactly 32 raw key bytes.
    """

    model_config = ConfigDict(frozen=True)

    mode: Literal["none", "sse-s3", "sse-kms", "sse-c"] = "none"
    kms_key_id: str | None = None
    customer_key: SecretStr | None = None

    @field_validator("customer_key")
    @classmethod
    def _key_is_32_bytes(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        try:
            raw = base64.b64decode(value.get_secret_value(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("customer_key must be base64 text of 32 bytes") from None
        if len(raw) != 32:
            raise ValueError(f"customer_key must decode to 32 bytes, got {len(raw)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Encryption:
        if self.mode == "sse-c" and self.customer_key is None:
            raise ValueError("mode 'sse-c' needs customer_key")
        if self.mode != "sse-c" and self.customer_key is not None:
            raise ValueError("customer_key is only used with mode 'sse-c'")
        if self.mode != "sse-kms" and self.kms_key_id is not None:
            raise ValueError("kms_key_id is only used with mode 'sse-kms'")
        return self


class StripeRule(BaseModel):
    """Lustre striping of large downloaded files: ``lfs setstripe -c COUNT -S SIZE``.

    A file of at least ``min_size`` bytes gets ``ceil(size / bytes_per_stripe)`` stripes,
    capped at ``max_count`` (-1 means "all OSTs"). Only applied on Lustre with ``lfs``.
    """

    model_config = ConfigDict(frozen=True)

    enabled: bool = True
    min_size: int = Field(default=1 * GiB, ge=0)
    bytes_per_stripe: int = Field(default=1 * GiB, gt=0)
    max_count: int = Field(default=-1, ge=-1)
    stripe_size: int = Field(default=4 * MiB, gt=0)


class TransferOptions(BaseModel):
    """How to move the data.

    ``filters`` are ``aws s3`` style include/exclude globs (``*`` also matches ``/``) on
    the path relative to the source prefix or directory, applied in order: everything
    is selected unless a filter says otherwise, and the last matching filter decides
    (:mod:`fsx_stage.filters`, the same rule as the ``--fsx-stage`` directive).
    ``part_size=None`` adapts the part size to each object (S3's 10,000-part limit).
    ``workers=None`` uses one process per two cores (at most 8) for recursive transfers;
    ``concurrency`` is the number of requests in flight per process.
    """

    model_config = ConfigDict(frozen=True)

    concurrency: int = Field(default=64, ge=1, le=1024)
    workers: int | None = Field(default=None, ge=1, le=64)
    part_size: int | None = Field(default=None, ge=5 * MiB, le=5 * GiB)
    multipart_threshold: int = Field(default=16 * MiB, ge=5 * MiB)
    filters: tuple[Filter, ...] = ()
    sync: bool = False
    fsync: bool = False
    preserve_owner: bool = False
    encryption: Encryption = Field(default_factory=Encryption)
    striping: StripeRule = Field(default_factory=StripeRule)


class TransferFailure(BaseModel):
    """One object or file that did not transfer; ``reason`` never contains secrets."""

    key: str
    reason: str
    category: FailureCategory


class TransferSummary(BaseModel):
    objects_done: int = 0
    objects_skipped: int = 0
    bytes_done: int = 0
    elapsed_s: float = 0.0
    failures: list[TransferFailure] = Field(default_factory=list)
    cancelled: bool = False

    @property
    def ok(self) -> bool:
        return not self.failures and not self.cancelled


@dataclass(frozen=True, slots=True)
class TransferEvent:
    """Progress: ``bytes`` is the amount this event accounts for, ``total`` the object size.

    ``key`` is the S3 key. For ``failed`` events ``reason``/``category`` say why.
    """

    kind: EventKind
    key: str
    bytes: int = 0
    total: int = -1
    reason: str = ""
    category: str = ""
