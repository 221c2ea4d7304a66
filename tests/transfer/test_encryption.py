"""Server-side encryption in both directions: SSE-C (SeaweedFS), SSE-S3, SSE-KMS (moto)."""

from __future__ import annotations

import base64
import os
import uuid
from pathlib import Path
from typing import Any

from tests.transfer.conftest import Run, settings_for

from fsx_stage.transfer import Encryption

MiB = 1024 * 1024
KEY = base64.b64encode(bytes(range(32))).decode()


def test_sse_c_round_trip_needs_the_key(run: Run, bucket: str, tmp_path: Path) -> None:
    sse_c = Encryption(mode="sse-c", customer_key=KEY)
    source = tmp_path / "src"
    source.mkdir()
    (source / "small").write_bytes(os.urandom(1000))
    (source / "multi").write_bytes(os.urandom(11 * MiB))
    parts = {"part_size": 5 * MiB, "multipart_threshold": 5 * MiB}
    assert run(source, f"s3://{bucket}/c/", recursive=True, encryption=sse_c, **parts).ok

    with_key = run(f"s3://{bucket}/c/", tmp_path / "ok", recursive=True, encryption=sse_c, **parts)
    assert with_key.ok
    for name in ("small", "multi"):
        assert (tmp_path / "ok" / name).read_bytes() == (source / name).read_bytes()

    without = run(f"s3://{bucket}/c/", tmp_path / "no", recursive=True, **parts)
    assert sorted(f.key for f in without.failures) == ["c/multi", "c/small"]
    assert all(KEY not in f.reason for f in without.failures)
    assert not (tmp_path / "no" / "small").exists()

    wrong = Encryption(mode="sse-c", customer_key=base64.b64encode(b"k" * 32).decode())
    assert not run(f"s3://{bucket}/c/small", tmp_path / "w", encryption=wrong).ok


def test_sse_s3_and_sse_kms_are_requested(run: Run, moto_server: Any, tmp_path: Path) -> None:
    client = moto_server.client()
    name = f"sse-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    source = tmp_path / "f"
    source.write_bytes(b"secret data")
    s3 = settings_for(moto_server)
    assert run(source, f"s3://{name}/s3", s3=s3, encryption=Encryption(mode="sse-s3")).ok
    assert client.head_object(Bucket=name, Key="s3")["ServerSideEncryption"] == "AES256"
    kms = Encryption(mode="sse-kms", kms_key_id="alias/test-key")
    assert run(source, f"s3://{name}/kms", s3=s3, encryption=kms).ok
    head = client.head_object(Bucket=name, Key="kms")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"].endswith("alias/test-key")
    assert run(f"s3://{name}/kms", tmp_path / "back", s3=s3, encryption=kms).ok
    assert (tmp_path / "back").read_bytes() == b"secret data"
