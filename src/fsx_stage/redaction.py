"""Secrets never leave the process: one redactor for log lines, job messages and failure reasons.

`REDACTOR` knows the secret values this process resolved (registered with `register_secret` as
soon as they are read: credentials, SSE-C keys) and the shapes of credentials in text
(``aws_secret_access_key=...``, ``SSECustomerKey=...``, the SSE-C key header, botocore's
``parameter SSECustomerKey, value: ...``, presigned-URL signatures, access key ids). The hooks'
log filter, the reasons the transfer core gives for a failure, and every message written for a
job (SystemComment, state files, the user's output) go through it.
"""

from __future__ import annotations

import re
import threading
from typing import Any

MASK = "***"

#: Names of fields that hold secrets, matched inside the spellings text uses:
#: ``aws_secret_access_key``, ``SecretAccessKey``, ``SSECustomerKey``,
#: ``x-amz-server-side-encryption-customer-key``.
_SENSITIVE_FIELD = (
    r"(?:secret[_-]?(?:access[_-]?)?key|session[_-]?token|security[_-]?token|"
    r"customer[_-]?key|password|passwd|authorization)"
)

_SECRET_SHAPES: tuple[tuple[re.Pattern[str], str], ...] = (
    # botocore's ParamValidationError: "Invalid type for parameter SSECustomerKey, value: ...,"
    (
        re.compile(rf"(?i)(parameter \w*{_SENSITIVE_FIELD}, value: )(.*?)(?=, type:|\n|$)"),
        r"\1" + MASK,
    ),
    # key=value / key: value / "key": "value" for names that hold secrets.
    (
        re.compile(rf"(?i)({_SENSITIVE_FIELD})([\"']?\s*[=:]\s*(?:b?[\"'])?)([^\s\"',;&]+)"),
        r"\1\2" + MASK,
    ),
    # Query-string credentials of presigned URLs.
    (re.compile(r"(?i)(X-Amz-(?:Signature|Security-Token|Credential)=)[^&\s\"']+"), r"\1" + MASK),
    # SigV4 Authorization header values.
    (re.compile(r"(?i)(Signature=)[0-9a-f]{16,}"), r"\1" + MASK),
    # Access key ids: keep the kind (AKIA long-term, ASIA temporary), hide the rest.
    (re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{12,}\b"), r"\1" + MASK),
)


class Redactor:
    """Removes registered secret values and credential-shaped text from strings."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def register(self, secret: str | None) -> None:
        # Very short values would mask innocent text everywhere; real secrets are long.
        if secret and len(secret) >= 6:
            with self._lock:
                self._secrets.add(secret)

    def redact(self, text: str) -> str:
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
        for secret in secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        for pattern, replacement in _SECRET_SHAPES:
            text = pattern.sub(replacement, text)
        return text

    def redact_value(self, value: Any) -> Any:
        """Redact strings nested in JSON-like values."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {k: self.redact_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact_value(v) for v in value]
        return value


REDACTOR = Redactor()


def register_secret(secret: str | None) -> None:
    """Make sure ``secret`` is masked wherever it would appear in a log line or a message."""
    REDACTOR.register(secret)


def redact(text: str) -> str:
    return REDACTOR.redact(text)
