"""The fault proxy: transparent by default, and each fault is seen by a real S3 client."""

from __future__ import annotations

import http.client
import io
import os
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    FlexibleChecksumError,
    ResponseStreamingError,
)
from tests.testbed.faultproxy import FaultKind, FaultProxy
from tests.testbed.seaweed import SeaweedServer
from tests.testbed.server import s3_client

MiB = 1024 * 1024


def client_via(
    proxy: FaultProxy, server: SeaweedServer, attempts: int, validate: bool = True
) -> Any:
    """A boto3 client through the proxy making at most ``attempts`` tries per call.

    ``validate=False`` turns off botocore's response checksum validation.
    """
    return s3_client(
        proxy.endpoint_url,
        server,
        retries={"mode": "standard", "total_max_attempts": attempts},
        response_checksum_validation="when_supported" if validate else "when_required",
    )


@pytest.fixture
def obj(s3_client: Any, bucket: str) -> tuple[str, bytes]:
    """A 1 MiB object stored with a CRC32 checksum, written directly (not via the proxy)."""
    data = os.urandom(MiB)
    s3_client.put_object(Bucket=bucket, Key="data/obj", Body=data, ChecksumAlgorithm="CRC32")
    return "data/obj", data


def test_transparent_round_trip_with_multipart_and_keep_alive(
    fault_proxy: FaultProxy, s3_server: SeaweedServer, bucket: str
) -> None:
    client = client_via(fault_proxy, s3_server, attempts=1)
    data = os.urandom(12 * MiB)
    client.upload_fileobj(
        io.BytesIO(data),
        bucket,
        "mp",
        Config=TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB),
    )
    for _ in range(10):
        assert client.get_object(Bucket=bucket, Key="mp")["Body"].read() == data
    assert fault_proxy.injected == dict.fromkeys(FaultKind, 0)
    methods = [method for method, _, _ in fault_proxy.log]
    assert methods.count("PUT") == 3  # 12 MiB in 5 MiB parts (UploadPart is a PUT)
    assert methods.count("GET") == 10


def test_chunked_request_body_is_forwarded(
    fault_proxy: FaultProxy, s3_client: Any, bucket: str
) -> None:
    url = s3_client.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "chunked"}, ExpiresIn=60
    )
    parts = urlsplit(url)
    conn = http.client.HTTPConnection("127.0.0.1", fault_proxy.port, timeout=30)
    chunks = [os.urandom(1000), os.urandom(70_000), b"tail"]
    conn.request("PUT", f"{parts.path}?{parts.query}", body=iter(chunks), encode_chunked=True)
    response = conn.getresponse()
    assert response.status == 200, response.read()
    response.read()
    conn.close()
    got = s3_client.get_object(Bucket=bucket, Key="chunked")["Body"].read()
    assert got == b"".join(chunks)


def test_reset_mid_body_is_a_client_error(
    fault_proxy: FaultProxy, s3_server: SeaweedServer, bucket: str, obj: tuple[str, bytes]
) -> None:
    key, _ = obj
    fault_proxy.set_faults(reset_count=1)
    response = client_via(fault_proxy, s3_server, 1).get_object(Bucket=bucket, Key=key)
    with pytest.raises(ResponseStreamingError, match="reset"):
        response["Body"].read()
    assert fault_proxy.injected[FaultKind.RESET] == 1


def test_reset_before_a_put_response_is_retried(
    fault_proxy: FaultProxy, s3_server: SeaweedServer, s3_client: Any, bucket: str
) -> None:
    fault_proxy.set_faults(reset_count=1, methods={"PUT"})
    with pytest.raises(ConnectionClosedError):
        client_via(fault_proxy, s3_server, 1).put_object(Bucket=bucket, Key="k", Body=b"v1")
    fault_proxy.set_faults(reset_count=1, methods={"PUT"})
    reply = client_via(fault_proxy, s3_server, 3).put_object(Bucket=bucket, Key="k", Body=b"v2")
    assert reply["ResponseMetadata"]["RetryAttempts"] == 1
    assert fault_proxy.injected[FaultKind.RESET] == 1
    assert s3_client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v2"


def test_upload_cut_off_mid_body_leaves_no_object_and_is_retried(
    fault_proxy: FaultProxy, s3_server: SeaweedServer, s3_client: Any, bucket: str
) -> None:
    data = os.urandom(2 * MiB)
    fault_proxy.set_faults(reset_upload_count=1)
    with pytest.raises((ConnectionClosedError, EndpointConnectionError)):
        client_via(fault_proxy, s3_server, 1).put_object(Bucket=bucket, Key="up", Body=data)
    with pytest.raises(ClientError) as missing:
        s3_client.head_object(Bucket=bucket, Key="up")
    assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    fault_proxy.set_faults(reset_upload_count=1)
    client_via(fault_proxy, s3_server, 3).put_object(Bucket=bucket, Key="up", Body=data)
    assert fault_proxy.injected[FaultKind.RESET_UPLOAD] == 1
    assert s3_client.get_object(Bucket=bucket, Key="up")["Body"].read() == data


def test_bodiless_requests_are_not_cut_off_as_uploads(
    fault_proxy: FaultProxy, s3_server: SeaweedServer, bucket: str, obj: tuple[str, bytes]
) -> None:
    fault_proxy.set_faults(reset_upload_rate=1.0)
    client_via(fault_proxy, s3_server, 1).head_object(Bucket=bucket, Key=obj[0])
    assert fault_proxy.injected[FaultKind.RESET_UPLOAD] == 0


def test_slowdown_burst_is_retried_by_botocore(
    fault_proxy: FaultProxy, s3_server: SeaweedServer, bucket: str, obj: tuple[str, bytes]
) -> None:
    key, data = obj
    fault_proxy.set_faults(slowdown_count=2, methods={"GET"})
    response = client_via(fault_proxy, s3_server, 3).get_object(Bucket=bucket, Key=key)
    assert response["Body"].read() == data
    assert response["ResponseMetadata"]["RetryAttempts"] == 2
    assert fault_proxy.injected[FaultKind.SLOWDOWN] == 2


def test_slowdown_is_a_proper_s3_error(
    fault_proxy: FaultProxy, s3_server: SeaweedServer, bucket: str, obj: tuple[str, bytes]
) -> None:
    fault_proxy.set_faults(slowdown_count=1)
    with pytest.raises(ClientError) as exc:
        client_via(fault_proxy, s3_server, 1).head_object(Bucket=bucket, Key=obj[0])
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    fault_proxy.set_faults(slowdown_count=1)
    with pytest.raises(ClientError) as exc:
        client_via(fault_proxy, s3_server, 1).list_objects_v2(Bucket=bucket)
    assert exc.value.response["Error"]["Code"] == "SlowDown"


def test_internal_error_then_success(
    fault_proxy: FaultProxy, s3_server: SeaweedServer, bucket: str, obj: tuple[str, bytes]
) -> None:
    key, data = obj
    fault_proxy.set_faults(error500_count=1)
    with pytest.raises(ClientError) as exc:
        client_via(fault_proxy, s3_server, 1).get_object(Bucket=bucket, Key=key)
    assert exc.value.response["Error"]["Code"] == "InternalError"
    got = client_via(fault_proxy, s3_server, 1).get_object(Bucket=bucket, Key=key)
    assert got["Body"].read() == data


def test_truncated_body_is_detected_by_content_length(
    fault_proxy: FaultProxy, s3_server: SeaweedServer, bucket: str, obj: tuple[str, bytes]
) -> None:
    fault_proxy.set_faults(truncate_count=1)
    response = client_via(fault_proxy, s3_server, 1).get_object(Bucket=bucket, Key=obj[0])
    with pytest.raises(ResponseStreamingError, match="IncompleteRead"):
        response["Body"].read()
    assert fault_proxy.injected[FaultKind.TRUNCATE] == 1


def test_corrupted_body_fails_checksum_validation(
    fault_proxy: FaultProxy, s3_server: SeaweedServer, bucket: str, obj: tuple[str, bytes]
) -> None:
    key, data = obj
    fault_proxy.set_faults(corrupt_count=1)
    unchecked = client_via(fault_proxy, s3_server, 1, validate=False)
    raw = unchecked.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert len(raw) == len(data)
    assert sum(a != b for a, b in zip(raw, data, strict=True)) == 1
    fault_proxy.set_faults(corrupt_count=1)
    checked = client_via(fault_proxy, s3_server, 1).get_object(
        Bucket=bucket, Key=key, ChecksumMode="ENABLED"
    )
    with pytest.raises(FlexibleChecksumError):
        checked["Body"].read()
    assert fault_proxy.injected[FaultKind.CORRUPT] == 1


def test_latency_delays_the_response(
    fault_proxy: FaultProxy, s3_server: SeaweedServer, bucket: str, obj: tuple[str, bytes]
) -> None:
    fault_proxy.set_faults(latency_s=0.3, latency_count=1)
    client = client_via(fault_proxy, s3_server, 1)
    start = time.monotonic()
    client.head_object(Bucket=bucket, Key=obj[0])
    assert time.monotonic() - start >= 0.3  # a lower bound only: sleeping never ends early
    client.head_object(Bucket=bucket, Key=obj[0])
    assert fault_proxy.injected[FaultKind.LATENCY] == 1


def test_filters_select_the_faulted_requests(
    fault_proxy: FaultProxy, s3_server: SeaweedServer, s3_client: Any, bucket: str
) -> None:
    for key in ("in/a", "in/b", "out/c"):
        s3_client.put_object(Bucket=bucket, Key=key, Body=b"x")
    client = client_via(fault_proxy, s3_server, 1)
    fault_proxy.set_faults(error500_rate=1.0, methods={"GET"}, key_pattern=r"/out/")
    client.head_object(Bucket=bucket, Key="out/c")  # HEAD: not a GET
    client.get_object(Bucket=bucket, Key="in/a")  # key does not match
    with pytest.raises(ClientError):
        client.get_object(Bucket=bucket, Key="out/c")
    fault_proxy.set_faults(error500_rate=1.0, first_n=1)
    with pytest.raises(ClientError):
        client.get_object(Bucket=bucket, Key="in/a")
    client.get_object(Bucket=bucket, Key="in/b")
    assert fault_proxy.injected[FaultKind.ERROR500] == 1
    assert [fault for _, _, fault in fault_proxy.log] == [FaultKind.ERROR500, None]


def test_rates_are_reproducible_with_a_seed(
    fault_proxy: FaultProxy, s3_server: SeaweedServer, bucket: str, obj: tuple[str, bytes]
) -> None:
    client = client_via(fault_proxy, s3_server, 1)

    def pattern() -> list[bool]:
        fault_proxy.set_faults(slowdown_rate=0.5, seed=7)
        hits = []
        for _ in range(20):
            try:
                client.head_object(Bucket=bucket, Key=obj[0])
                hits.append(False)
            except ClientError:
                hits.append(True)
        return hits

    first = pattern()
    assert 0 < sum(first) < 20
    assert pattern() == first


@pytest.mark.parametrize(
    "plan", [{"reset_rate": 1.5}, {"slowdown_count": -1}, {"latency_s": -1.0}, {"bogus": 1}]
)
def test_invalid_plans_are_refused(fault_proxy: FaultProxy, plan: dict[str, Any]) -> None:
    with pytest.raises((ValueError, TypeError)):
        fault_proxy.set_faults(**plan)
