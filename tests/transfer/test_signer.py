"""The direct client's SigV4 signer gives botocore's signature (``S3SigV4Auth``) for the
requests it sends: keys with spaces, unicode and reserved characters, queries, SSE headers,
session tokens, signed and unsigned payloads."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from fsx_stage.transfer.s3.config_without_botocore import FrozenCredentials, StaticProvider
from fsx_stage.transfer.s3.direct_client import FastS3, canonical_query, quote_key
from fsx_stage.transfer.s3.http1 import Endpoint

PREFIX = "http://127.0.0.1:8333/my-bucket/"
EMPTY = hashlib.sha256(b"").hexdigest()

CASES = [
    ("GET", "plain.bin", {}, None, EMPTY),
    ("GET", "dir/ü ñ+%~&=?.x", {"x-amz-checksum-mode": "ENABLED"}, None, EMPTY),
    ("HEAD", "a b", {"range": "bytes=0-9", "if-match": '"abc"'}, {"partNumber": "1"}, EMPTY),
    ("GET", "", {}, {"list-type": "2", "prefix": "p q/ü", "continuation-token": "a+b/c="}, EMPTY),
    (
        "PUT",
        "k",
        {
            "x-amz-meta-fsx-mode": "33188",
            "x-amz-checksum-crc32": "AAAAAA==",
            "x-amz-server-side-encryption-customer-algorithm": "AES256",
            "content-length": "3",
        },
        None,
        "UNSIGNED-PAYLOAD",
    ),
    ("PUT", "k2", {"content-length": "3"}, None, hashlib.sha256(b"abc").hexdigest()),
]


@pytest.mark.parametrize("token", [None, "session/token+="])
@pytest.mark.parametrize(("method", "key", "headers", "query", "payload"), CASES)
def test_the_signature_is_botocores(
    method: str,
    key: str,
    headers: dict[str, str],
    query: dict[str, str] | None,
    payload: str,
    token: str | None,
) -> None:
    frozen = FrozenCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    fast = FastS3(
        StaticProvider(frozen),
        PREFIX,
        "eu-west-3",
        "s3",
        Endpoint.from_url(PREFIX, None, 1, 1),
        1,
    )
    path = "/my-bucket/" + quote_key(key)
    ordered = canonical_query(query)
    ours = asyncio.run(fast._signed_headers(method, path, ordered, headers, payload))

    url = "http://127.0.0.1:8333" + path + ("?" + ordered if ordered else "")
    request = AWSRequest(method=method, url=url, headers={
        **{k: v for k, v in ours.items() if k != "authorization"},
        "host": "127.0.0.1:8333",
    })  # fmt: skip
    auth = S3SigV4Auth(Credentials(frozen.access_key, frozen.secret_key, token), "s3", "eu-west-3")
    request.context["timestamp"] = ours["x-amz-date"]
    canonical = auth.canonical_request(request)
    signature = auth.signature(auth.string_to_sign(request, canonical), request)
    assert ours["authorization"].endswith(f"Signature={signature}")
    signed = ";".join(sorted(name.lower() for name in request.headers))
    assert f"SignedHeaders={signed}," in ours["authorization"]
