"""Creating the aiobotocore S3 client and the per-request encryption parameters."""

from __future__ import annotations

import base64
import hashlib
from contextlib import AbstractAsyncContextManager
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession

from fsx_stage.transfer.models import Encryption, S3Settings


def create_client(settings: S3Settings, pool_size: int) -> AbstractAsyncContextManager[Any]:
    """An S3 client whose HTTP pool matches our concurrency.

    Retries are ours (:class:`RetryPolicy`), so botocore makes one attempt. Botocore's
    own checksum handling is limited to what the API requires: we compute, send and
    verify checksums ourselves, streaming.
    """
    session = AioSession(profile=settings.profile)
    config = AioConfig(
        max_pool_connections=pool_size,
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        retries={"max_attempts": 1, "mode": "standard"},
        s3={"addressing_style": settings.addressing_style},
        parameter_validation=False,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        tcp_keepalive=True,
    )
    kwargs: dict[str, Any] = {"config": config}
    if settings.endpoint_url:
        kwargs["endpoint_url"] = settings.endpoint_url
    if settings.region:
        kwargs["region_name"] = settings.region
    if settings.credentials is not None:
        creds = settings.credentials
        kwargs["aws_access_key_id"] = creds.access_key_id
        kwargs["aws_secret_access_key"] = creds.secret_access_key.get_secret_value()
        if creds.session_token is not None:
            kwargs["aws_session_token"] = creds.session_token.get_secret_value()
    return session.create_client("s3", **kwargs)  # type: ignore[no-any-return]


def sse_write_params(enc: Encryption) -> dict[str, str]:
    """Parameters for PutObject / CreateMultipartUpload."""
    if enc.mode == "sse-s3":
        return {"ServerSideEncryption": "AES256"}
    if enc.mode == "sse-kms":
        params = {"ServerSideEncryption": "aws:kms"}
        if enc.kms_key_id:
            params["SSEKMSKeyId"] = enc.kms_key_id
        return params
    return sse_c_params(enc)


def sse_c_params(enc: Encryption) -> dict[str, str]:
    """Parameters for every request that reads or writes SSE-C data (incl. UploadPart)."""
    if enc.mode != "sse-c" or enc.customer_key is None:
        return {}
    raw = base64.b64decode(enc.customer_key.get_secret_value())
    return {
        "SSECustomerAlgorithm": "AES256",
        # With the MD5 given, botocore sends the (already base64) key as it is.
        "SSECustomerKey": enc.customer_key.get_secret_value(),
        "SSECustomerKeyMD5": base64.b64encode(hashlib.md5(raw).digest()).decode(),  # noqa: S324
    }
