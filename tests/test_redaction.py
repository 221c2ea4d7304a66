"""No secret leaves the process: registered values and credential-shaped text are masked in
log lines, job messages and the transfer core's failure reasons."""

from __future__ import annotations

import base64
import os
import pickle
import subprocess
import sys

import pytest
from botocore.exceptions import ParamValidationError

from fsx_stage.redaction import Redactor, redact
from fsx_stage.transfer import Encryption, Secret
from fsx_stage.transfer.errors import classify

SSE_C_KEY = base64.b64encode(os.urandom(32)).decode()


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        ("aws_secret_access_key=abcDEF123/xyz", "abcDEF123/xyz"),
        ('{"SecretAccessKey": "abcDEF123xyz"}', "abcDEF123xyz"),
        ("AWS_SESSION_TOKEN=FwoGZXIvYXdzEJr", "FwoGZXIvYXdzEJr"),
        ("https://b.s3/k?X-Amz-Signature=deadbeef00&X-Amz-Credential=AKIA/x", "deadbeef00"),
        (
            "Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/2024, "
            "Signature=0123456789abcdef0123456789abcdef",
            "0123456789abcdef0123",
        ),
        ("key id AKIAIOSFODNN7EXAMPLE", "IOSFODNN7EXAMPLE"),
        ("sse_customer_key=c2VjcmV0IGtleQ==", "c2VjcmV0IGtleQ=="),
        # botocore's parameter names and reprs of request parameters and headers
        ("SSECustomerKey=c2VjcmV0IGtleQ==", "c2VjcmV0IGtleQ=="),
        ("{'SSECustomerKey': 'c2VjcmV0IGtleQ=='}", "c2VjcmV0IGtleQ=="),
        ("{'CopySourceSSECustomerKey': b'c2VjcmV0IGtleQ=='}", "c2VjcmV0IGtleQ=="),
        ("x-amz-server-side-encryption-customer-key: c2VjcmV0IGtleQ==", "c2VjcmV0IGtleQ=="),
        (
            "Invalid type for parameter SSECustomerKey, value: b'\\x01 secret bytes', "
            "type: <class 'bytes'>, valid types: <class 'str'>",
            "secret bytes",
        ),
    ],
)
def test_credential_shapes_are_masked(text: str, leak: str) -> None:
    assert leak not in Redactor().redact(text)


def test_ordinary_text_is_untouched() -> None:
    for text in (
        "directive 2: s3://bucket/key: NoSuchKey (HTTP 404)",
        "Invalid type for parameter Range, value: 5, type: <class 'int'>",
    ):
        assert Redactor().redact(text) == text


def test_a_secret_is_masked_everywhere_once_wrapped() -> None:
    Encryption(mode="sse-c", customer_key=Secret(SSE_C_KEY))
    assert (
        redact(f"PUT failed with key {SSE_C_KEY} in a header")
        == "PUT failed with key *** in a header"
    )


def test_a_secret_sent_to_a_worker_process_is_registered_there_too() -> None:
    code = (
        "import pickle, sys; from fsx_stage.redaction import redact; "
        "pickle.loads(sys.stdin.buffer.read()); print(redact('key {0}'))"
    )
    secret = base64.b64encode(os.urandom(32)).decode()
    out = subprocess.run(
        [sys.executable, "-c", code.replace("{0}", secret)],
        input=pickle.dumps(Secret(secret)),
        capture_output=True,
        check=True,
    ).stdout.decode()
    assert out.strip() == "key ***"


def test_failure_reasons_never_carry_an_sse_c_key() -> None:
    """botocore's messages quote a parameter's value; the HTTP stack's quote headers."""
    raw = "3q2+7w" + "A" * 38  # a key never registered: only its shape gives it away
    failures: list[BaseException] = [
        ParamValidationError(
            report=f"Invalid type for parameter SSECustomerKey, value: b'{raw}', "
            "type: <class 'bytes'>, valid types: <class 'str'>"
        ),
        RuntimeError(f"bad header {{'x-amz-server-side-encryption-customer-key': '{raw}'}}"),
        ExceptionGroup("ranges", [ValueError(f"SSECustomerKey={raw}")]),
    ]
    for failure in failures:
        _category, reason = classify(failure)
        assert raw not in reason, (type(failure), reason)
    Secret(SSE_C_KEY)  # a registered key is masked whatever the text around it
    assert SSE_C_KEY not in classify(OSError(f"cannot send {SSE_C_KEY}"))[1]


def test_the_agent_never_answers_a_user_with_a_secret() -> None:
    from fsx_stage.agent.protocol import Reply

    Secret(SSE_C_KEY)
    reply = Reply(state="failed", error=f"PUT refused: SSECustomerKey={SSE_C_KEY}")
    assert reply.error is not None and SSE_C_KEY not in reply.error
    assert SSE_C_KEY not in Reply.model_validate_json(reply.model_dump_json()).model_dump_json()
