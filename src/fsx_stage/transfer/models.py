"""The transfer core's boundary: settings, options and results, checked when built.

The CLI and the hooks build these (the hooks from pydantic-validated site config and
directives). They are frozen dataclasses, not pydantic models, because start-up is part
of every `fsx-stage cp`: importing pydantic and building its models took ~60 ms, a tenth
of moving 2,000 small objects. Each checks its fields when built and raises
``ValueError`` naming the field and what was expected.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from fsx_stage.filters import Filter
from fsx_stage.redaction import register_secret

MiB = 1024 * 1024
GiB = 1024 * MiB

FailureCategory = Literal[
    "not_found",
    "access_denied",
    "checksum",
    "network",
    "throttled",
    "local_io",
    "no_space",  # ENOSPC or EDQUOT writing the destination file system
    "unsafe_key",
    "invalid",
    "other",
]
#: ``listed``: the source listing is complete (every object has had its ``queued``).
#: ``planned``: a dry run would copy it; ``deleted``: ``sync --delete`` removed it.
EventKind = Literal["queued", "listed", "bytes", "done", "skipped", "failed", "planned", "deleted"]
AddressingStyle = Literal["auto", "path", "virtual"]
EncryptionMode = Literal["none", "sse-s3", "sse-kms", "sse-c"]


class Secret:
    """A secret string: ``**********`` wherever it is shown (repr, str), and its value is
    registered with the process's redactor, so no log line or failure reason can carry it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("a Secret holds a str")
        self._value = value
        register_secret(value)

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __getstate__(self) -> str:
        return self._value

    def __setstate__(self, state: str) -> None:  # in a worker process: registered there too
        self._value = state
        register_secret(state)


def _check(owner: object, name: str, ok: bool, expected: str) -> None:
    if not ok:
        value = getattr(owner, name)
        raise ValueError(f"{type(owner).__name__}.{name}: expected {expected}, got {value!r}")


def _integer(owner: object, name: str, low: int | None = None, high: int | None = None) -> None:
    value = getattr(owner, name)
    ok = isinstance(value, int) and not isinstance(value, bool)
    ok = ok and (low is None or value >= low) and (high is None or value <= high)
    bounds = [f">= {low}"] if low is not None else []
    bounds += [f"<= {high}"] if high is not None else []
    _check(owner, name, ok, " ".join(["an integer", *bounds]))


def _positive(owner: object, name: str) -> None:
    value = getattr(owner, name)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    _check(owner, name, ok, "a number > 0")


def _choice(owner: object, name: str, choices: Any) -> None:
    allowed = get_args(choices)
    _check(owner, name, getattr(owner, name) in allowed, "one of " + ", ".join(allowed))


def _secret(owner: object, name: str) -> None:
    value = getattr(owner, name)
    if isinstance(value, str):  # callers may hand the plain text: it is wrapped at once
        object.__setattr__(owner, name, Secret(value))
    elif value is not None and not isinstance(value, Secret):
        raise ValueError(f"{type(owner).__name__}.{name}: expected a str or Secret")


@dataclass(frozen=True, slots=True)
class StaticCredentials:
    """Credentials resolved elsewhere (e.g. by the hooks, as root) and handed to us."""

    access_key_id: str
    secret_access_key: Secret
    session_token: Secret | None = None

    def __post_init__(self) -> None:
        _check(self, "access_key_id", isinstance(self.access_key_id, str), "a str")
        _secret(self, "secret_access_key")
        _secret(self, "session_token")


@dataclass(frozen=True, slots=True)
class S3Settings:
    """How to reach S3. ``None`` fields fall back to the standard AWS chain.

    ``endpoint_url=None`` honours ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL`` and the
    profile's config; ``credentials=None`` uses the default credential chain.
    """

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    addressing_style: AddressingStyle = "auto"
    credentials: StaticCredentials | None = None
    max_attempts: int = 8
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        _choice(self, "addressing_style", AddressingStyle)
        _integer(self, "max_attempts", 1, 50)
        _positive(self, "connect_timeout_s")
        _positive(self, "read_timeout_s")


@dataclass(frozen=True, slots=True)
class Encryption:
    """Server-side encryption, applied to both directions.

    ``customer_key`` (SSE-C) is the base64 text of exactly 32 raw key bytes.
    """

    mode: EncryptionMode = "none"
    kms_key_id: str | None = None
    customer_key: Secret | None = None

    def __post_init__(self) -> None:
        _choice(self, "mode", EncryptionMode)
        _secret(self, "customer_key")
        if self.customer_key is not None:
            try:
                raw = base64.b64decode(self.customer_key.get_secret_value(), validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("customer_key must be base64 text of 32 bytes") from None
            if len(raw) != 32:
                raise ValueError(f"customer_key must decode to 32 bytes, got {len(raw)}")
        if self.mode == "sse-c" and self.customer_key is None:
            raise ValueError("mode 'sse-c' needs customer_key")
        if self.mode != "sse-c" and self.customer_key is not None:
            raise ValueError("customer_key is only used with mode 'sse-c'")
        if self.mode != "sse-kms" and self.kms_key_id is not None:
            raise ValueError("kms_key_id is only used with mode 'sse-kms'")


@dataclass(frozen=True, slots=True)
class StripeRule:
    """Lustre striping of large downloaded files: ``lfs setstripe -c COUNT -S SIZE``.

    A file of at least ``min_size`` bytes gets ``ceil(size / bytes_per_stripe)`` stripes,
    capped at ``max_count`` (-1 means "all OSTs"). Only applied on Lustre with ``lfs``.
    """

    enabled: bool = True
    min_size: int = 1 * GiB
    bytes_per_stripe: int = 1 * GiB
    max_count: int = -1
    stripe_size: int = 4 * MiB

    def __post_init__(self) -> None:
        _integer(self, "min_size", 0)
        _integer(self, "bytes_per_stripe", 1)
        _integer(self, "max_count", -1)
        _integer(self, "stripe_size", 1)


@dataclass(frozen=True, slots=True)
class TransferOptions:
    """How to move the data.

    ``filters`` are ``aws s3`` style include/exclude globs (``*`` also matches ``/``) on
    the path relative to the source prefix or directory, applied in order: everything
    is selected unless a filter says otherwise, and the last matching filter decides
    (:mod:`fsx_stage.filters`, the same rule as the ``--fsx-stage`` directive).
    ``part_size=None`` adapts the part size to each object (S3's 10,000-part limit).
    ``workers=None`` uses one process per two cores (at most 8) for recursive transfers;
    ``concurrency`` is the number of requests in flight per process. ``dryrun`` moves
    nothing: each object is a ``planned`` event (or ``skipped`` by sync), in one process.
    ``delete`` (sync only, one process) removes destination items the source lacks.
    ``exact_timestamps`` (sync downloads): a file without our source record is identical
    only when its mtime equals the object's LastModified (whole seconds), not just newer.
    """

    concurrency: int = 64
    workers: int | None = None
    part_size: int | None = None
    multipart_threshold: int = 16 * MiB
    filters: tuple[Filter, ...] = ()
    sync: bool = False
    fsync: bool = False
    preserve_owner: bool = False
    dryrun: bool = False
    delete: bool = False
    exact_timestamps: bool = False
    encryption: Encryption = field(default_factory=Encryption)
    striping: StripeRule = field(default_factory=StripeRule)

    def __post_init__(self) -> None:
        _integer(self, "concurrency", 1, 1024)
        if self.workers is not None:
            _integer(self, "workers", 1, 64)
        if self.part_size is not None:
            _integer(self, "part_size", 5 * MiB, 5 * GiB)
        _integer(self, "multipart_threshold", 5 * MiB)
        object.__setattr__(self, "filters", tuple(self.filters))
        for item in self.filters:
            _check(self, "filters", isinstance(item, Filter), "Filter items")
        _check(self, "delete", not self.delete or self.sync, "sync=True with delete")
        _check(
            self,
            "exact_timestamps",
            not self.exact_timestamps or self.sync,
            "sync=True with exact_timestamps",
        )
        _check(self, "encryption", isinstance(self.encryption, Encryption), "an Encryption")
        _check(self, "striping", isinstance(self.striping, StripeRule), "a StripeRule")


@dataclass(slots=True)
class TransferFailure:
    """One object or file that did not transfer; ``reason`` never contains secrets."""

    key: str
    reason: str
    category: FailureCategory


@dataclass(slots=True)
class TransferSummary:
    objects_done: int = 0
    objects_skipped: int = 0
    objects_deleted: int = 0
    bytes_done: int = 0
    elapsed_s: float = 0.0
    failures: list[TransferFailure] = field(default_factory=list)
    cancelled: bool = False

    @property
    def ok(self) -> bool:
        return not self.failures and not self.cancelled

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the CLI's ``--json`` summary, the hooks' worker reply)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TransferSummary:
        fields = dict(data)
        fields["failures"] = [TransferFailure(**item) for item in data.get("failures", [])]
        return cls(**fields)


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
