"""Server-side encryption parameters, in botocore's names and as HTTP headers (one table)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping

from fsx_stage.transfer.models import Encryption

#: botocore parameter -> HTTP header
HEADERS = {
    "ServerSideEncryption": "x-amz-server-side-encryption",
    "SSEKMSKeyId": "x-amz-server-side-encryption-aws-kms-key-id",
    "SSECustomerAlgorithm": "x-amz-server-side-encryption-customer-algorithm",
    "SSECustomerKey": "x-amz-server-side-encryption-customer-key",
    "SSECustomerKeyMD5": "x-amz-server-side-encryption-customer-key-md5",
}


def write_params(enc: Encryption) -> dict[str, str]:
    """Parameters for PutObject / CreateMultipartUpload."""
    if enc.mode == "sse-s3":
        return {"ServerSideEncryption": "AES256"}
    if enc.mode == "sse-kms":
        params = {"ServerSideEncryption": "aws:kms"}
        if enc.kms_key_id:
            params["SSEKMSKeyId"] = enc.kms_key_id
        return params
    return read_params(enc)


def read_params(enc: Encryption) -> dict[str, str]:
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


def as_headers(params: Mapping[str, str]) -> dict[str, str]:
    return {HEADERS[name]: value for name, value in params.items()}
