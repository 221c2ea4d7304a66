"""Classifying failures and retrying transient ones with exponential backoff and jitter."""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import re
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar
from xml.etree import ElementTree

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    FlexibleChecksumError,
    HTTPClientError,
    NoCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from fsx_stage.redaction import redact
from fsx_stage.transfer.models import FailureCategory

T = TypeVar("T")
log = logging.getLogger("fsx_stage.transfer")

_NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "404", "NotFound", "NoSuchUpload"}
_DENIED = {
    "AccessDenied",
    "403",
    "Forbidden",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AllAccessDisabled",
    "ExpiredToken",
    "InvalidToken",
    "AccountProblem",
    "KMS.AccessDeniedException",
}
_THROTTLED = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequests",
    "TooManyRequestsException",
    "RequestThrottled",
    "ServiceUnavailable",
    "503",
    "429",
}
_CHECKSUM = {"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch", "InvalidChecksum"}
_TRANSIENT = {"InternalError", "RequestTimeout", "RequestTimeTooSkewed", "500", "502", "504"}
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# Which failure of a group (the ranges of one object) explains it: the local file system
# first (retrying elsewhere cannot fix it), then what S3 said.
_GROUP_ORDER: tuple[FailureCategory, ...] = (
    "no_space",
    "local_io",
    "unsafe_key",
    "access_denied",
    "not_found",
    "invalid",
    "checksum",
    "throttled",
    "network",
    "other",
)


class TransferError(Exception):
    """A failure of one object with its category; the message is safe to show."""

    def __init__(self, reason: str, category: FailureCategory) -> None:
        super().__init__(reason)
        self.reason = reason
        self.category: FailureCategory = category


class UnsafePath(TransferError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason, "unsafe_key")


class ChecksumMismatch(TransferError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason, "checksum")


class ObjectChanged(TransferError):
    """The source changed while we read it (S3 412, or a local file rewritten)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, "other")


class S3Error(Exception):
    """An error reply of S3: its code (the HTTP status where S3 sent none, as for a
    HEAD), status and message. Every store raises these, whatever its wire."""

    def __init__(self, code: str, status: int, message: str = "", operation: str = "") -> None:
        super().__init__(f"{code} (HTTP {status}) in {operation}: {message}")
        self.code = code or str(status)
        self.status = status
        self.message = message
        self.operation = operation

    @classmethod
    def from_client_error(cls, exc: ClientError) -> S3Error:
        error = exc.response.get("Error", {})
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return cls(
            str(error.get("Code") or status or ""),
            status,
            str(error.get("Message") or ""),
            exc.operation_name,
        )


def client_error_code(exc: ClientError) -> str:
    return S3Error.from_client_error(exc).code


def classify(exc: BaseException) -> tuple[FailureCategory, str]:
    """The failure category and a message that carries no secrets.

    Every message goes through the redactor: botocore's and the HTTP stack's texts may quote a
    parameter's value (an SSE-C key) or a signed URL.
    """
    category, text = _classify(exc)
    return category, redact(text)


def _classify(exc: BaseException) -> tuple[FailureCategory, str]:
    if isinstance(exc, BaseExceptionGroup):  # the ranges of one object (a TaskGroup)
        found = [_classify(leaf) for leaf in _leaves(exc)]
        return min(found, key=lambda pair: _GROUP_ORDER.index(pair[0]), default=("other", ""))
    if isinstance(exc, TransferError):
        return exc.category, exc.reason
    if isinstance(exc, ClientError):
        exc = S3Error.from_client_error(exc)
    if isinstance(exc, S3Error):
        return _classify_reply(exc.code, exc.status, exc.message)
    if isinstance(exc, ElementTree.ParseError) or _is_parser_error(exc):
        return "network", f"garbled response: {exc}"  # corrupted or cut short on the way
    if isinstance(exc, FlexibleChecksumError):
        return "checksum", str(exc)
    if isinstance(exc, NoCredentialsError):
        return "access_denied", "no AWS credentials found"
    if isinstance(
        exc,
        BotoConnectionError
        | HTTPClientError
        | ReadTimeoutError
        | ResponseStreamingError
        | asyncio.TimeoutError
        | ConnectionError,
    ) or _is_aiohttp_error(exc):
        return "network", _network_text(exc)
    if isinstance(exc, BotoCoreError):
        return "other", _without_urls(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, FileNotFoundError):
        return "not_found", f"no such file or directory: {exc.filename or exc}"
    if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
        return "no_space", f"{exc.strerror}" + (f" ({exc.filename})" if exc.filename else "")
    if isinstance(exc, OSError):
        return "local_io", f"{exc.strerror or type(exc).__name__}" + (
            f" ({exc.filename})" if exc.filename else ""
        )
    return "other", f"{type(exc).__name__}: {exc}"


_URL = re.compile(r"""["']?https?://[^\s"']*["']?""")


def _classify_reply(code: str, status: int, message: str) -> tuple[FailureCategory, str]:
    said = f"HTTP {status}" if code == str(status) else f"{code}, HTTP {status}"
    text = f"{code} (HTTP {status})" + (f": {message}" if message else "")
    if code in _NOT_FOUND:
        return "not_found", f"not found ({said})" + (f": {message}" if message else "")
    if code in _DENIED:
        return "access_denied", text
    if code in _THROTTLED or status in (429, 503):
        return "throttled", text
    if code in _CHECKSUM:
        return "checksum", text
    if code in ("PreconditionFailed", "412"):
        return "other", "object changed during the transfer (" + text + ")"
    if code in _TRANSIENT or status >= 500:
        return "network", text
    if 400 <= status < 500:
        return "invalid", text
    return "other", text


def _without_urls(text: str) -> str:
    """Users know their bucket and key, not the endpoint's URL (shown in ``AdminComment``)."""
    return _URL.sub("S3", text)


def _network_text(exc: BaseException) -> str:
    """What went wrong on the way to S3, in words (never botocore's endpoint URL)."""
    if isinstance(exc, ReadTimeoutError | asyncio.TimeoutError):
        return "S3 did not answer in time (read timeout)"
    if isinstance(exc, BotoConnectionError):
        return "could not connect to S3" + (" (connect timeout)" if "timeout" in str(exc) else "")
    if isinstance(exc, OSError) and exc.strerror:
        return f"could not reach S3 ({exc.strerror.lower()})"
    return _without_urls(f"{type(exc).__name__}: {exc}")


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    leaves: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            leaves += _leaves(exc)
        elif not isinstance(exc, asyncio.CancelledError):
            leaves.append(exc)
    return leaves


def is_retryable(category: FailureCategory, exc: BaseException) -> bool:
    if isinstance(exc, ObjectChanged):
        return True
    if isinstance(exc, ClientError):
        exc = S3Error.from_client_error(exc)
    if isinstance(exc, S3Error) and exc.code in ("PreconditionFailed", "412"):
        return True
    return category in ("network", "throttled", "checksum")


class RetryPolicy:
    """Full-jitter exponential backoff; throttling backs off harder than other faults."""

    def __init__(self, max_attempts: int, base_s: float = 0.1, cap_s: float = 20.0) -> None:
        self.max_attempts = max_attempts
        self.base_s = base_s
        self.cap_s = cap_s

    def delay(self, attempt: int, category: FailureCategory) -> float:
        base = self.base_s * (2 if category == "throttled" else 1)
        return random.uniform(0, min(self.cap_s, base * 2**attempt))  # noqa: S311

    async def run(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run ``operation`` until it succeeds, fails for good or runs out of attempts."""
        attempt = 0
        while True:
            try:
                return await operation()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                category, reason = classify(exc)
                attempt += 1
                if attempt >= self.max_attempts or not is_retryable(category, exc):
                    raise
                delay = self.delay(attempt, category)
                log.info("retry %d in %.2fs after %s: %s", attempt, delay, category, reason)
                await asyncio.sleep(delay)


def _is_parser_error(exc: BaseException) -> bool:
    """Botocore's ``ResponseParserError`` (its parsers, ~25 ms to import, load only with
    the botocore client: no such error can exist before)."""
    parsers = sys.modules.get("botocore.parsers")
    return parsers is not None and isinstance(exc, parsers.ResponseParserError)


def _is_aiohttp_error(exc: BaseException) -> bool:
    """An ``aiohttp.ClientError`` (aiohttp, ~100 ms to import, loads only with the
    botocore client: no such error exists before)."""
    client = sys.modules.get("aiohttp.client_exceptions")
    return client is not None and isinstance(exc, client.ClientError)
