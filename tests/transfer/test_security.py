"""Downloads never write outside DST: hostile keys (on moto, which stores them) and
symlinks planted inside DST are refused as failures, not crashes, and nothing escapes."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from tests.transfer.conftest import Run, settings_for, tree

HOSTILE = ["a/../../escape", "../escape", "/abs/escape", "a//b", "./dot", "a/./b", "x/.."]


@pytest.fixture
def moto_bucket(moto_server: Any) -> str:
    name = f"hostile-{uuid.uuid4().hex[:12]}"
    moto_server.client().create_bucket(Bucket=name)
    return name


def test_hostile_keys_are_refused_and_the_rest_transfers(
    run: Run, moto_server: Any, moto_bucket: str, tmp_path: Path
) -> None:
    client = moto_server.client()
    for key in HOSTILE:
        client.put_object(Bucket=moto_bucket, Key=f"p/{key}", Body=b"evil")
    client.put_object(Bucket=moto_bucket, Key="p/fine/ok.txt", Body=b"ok")
    dst = tmp_path / "inner" / "dst"
    summary = run(f"s3://{moto_bucket}/p/", dst, recursive=True, s3=settings_for(moto_server))
    assert summary.objects_done == 1
    assert sorted(f.key for f in summary.failures) == sorted(f"p/{key}" for key in HOSTILE)
    assert {f.category for f in summary.failures} == {"unsafe_key"}
    assert tree(tmp_path) == {"inner/dst/fine/ok.txt": b"ok"}


def test_single_hostile_key_is_refused(
    run: Run, moto_server: Any, moto_bucket: str, tmp_path: Path
) -> None:
    moto_server.client().put_object(Bucket=moto_bucket, Key="a/..", Body=b"evil")
    summary = run(f"s3://{moto_bucket}/a/..", f"{tmp_path}/d/", s3=settings_for(moto_server))
    assert [f.category for f in summary.failures] == ["unsafe_key"]
    assert tree(tmp_path) == {}


def test_symlink_planted_in_dst_is_never_followed(
    run: Run, bucket: str, s3_client: Any, tmp_path: Path
) -> None:
    for key in ("p/sub/file.txt", "p/top.txt", "p/sub2/x.txt"):
        s3_client.put_object(Bucket=bucket, Key=key, Body=b"data")
    outside = tmp_path / "outside"
    outside.mkdir()
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "sub").symlink_to(outside)  # a directory symlink on the path
    (dst / "top.txt").symlink_to(outside / "victim")  # a symlink at the final name
    summary = run(f"s3://{bucket}/p/", dst, recursive=True)
    assert [(f.key, f.category) for f in summary.failures] == [("p/sub/file.txt", "unsafe_key")]
    assert "symlink" in summary.failures[0].reason
    assert list(outside.iterdir()) == []
    # the final-name symlink was replaced by the file, not written through
    assert not (dst / "top.txt").is_symlink() and (dst / "top.txt").read_bytes() == b"data"
    assert (dst / "sub2" / "x.txt").read_bytes() == b"data"


def test_uploads_never_follow_symlinks(
    run: Run, bucket: str, s3_client: Any, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("not for S3")
    source = tmp_path / "src"
    (source / "d").mkdir(parents=True)
    (source / "link").symlink_to(secret)
    (source / "dirlink").symlink_to(tmp_path)
    assert run(source, f"s3://{bucket}/u/", recursive=True).ok
    keys = {o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {"u/link", "u/dirlink", "u/d/"}
    body = s3_client.get_object(Bucket=bucket, Key="u/link")["Body"].read()
    assert body == os.fsencode(secret)
