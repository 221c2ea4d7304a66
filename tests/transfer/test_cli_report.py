"""What ``fsx-stage cp``/``sync`` tell a person: the summary, an empty source, many failures."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from tests.transfer.test_cli import cli


def test_summary_names_direction_bytes_rate_and_unchanged(
    bucket: str, s3_env: dict[str, str], tmp_path: Path, s3_client: Any
) -> None:
    for name in ("a", "b"):
        s3_client.put_object(Bucket=bucket, Key=f"h/{name}", Body=b"x" * 1024)
    dst = tmp_path / "d"
    first = cli("sync", f"s3://{bucket}/h/", str(dst), "--no-progress", env=s3_env)
    assert first.returncode == 0, first.stderr
    assert re.search(r"downloaded 2 objects, 2\.0 KiB in [\d.]+ s \([\d.]+ \S+/s\)$", first.stderr)
    (dst / "a").write_bytes(b"y" * 1024)  # changed since our download: fetched again
    again = cli("sync", f"s3://{bucket}/h/", str(dst), "--no-progress", env=s3_env)
    assert "downloaded 1 object, 1.0 KiB" in again.stderr, again.stderr
    assert "; 1 unchanged" in again.stderr


def test_an_empty_prefix_says_so_and_exits_0(
    bucket: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    result = cli("cp", "-r", f"s3://{bucket}/nothing/here/", str(tmp_path / "d"), env=s3_env)
    assert result.returncode == 0, result.stderr
    assert f"no objects under s3://{bucket}/nothing/here/" in result.stderr


def test_many_failures_are_summarised_by_reason_not_one_line_each(
    bucket: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    keys = [f"s3://{bucket}/gone/k{i:02d}" for i in range(30)]
    result = cli("cp", *keys, f"{tmp_path}/", "--no-progress", env=s3_env)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) < 10, result.stderr
    assert any("30 objects failed" in line for line in lines)
    (reason,) = [line for line in lines if "30 not_found" in line]
    assert reason.count("gone/k") == 5 and reason.endswith(", ...")
    assert "all failures are in --json output" in result.stderr
    assert "; 30 failed" in lines[-1]


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_dryrun_download_lists_each_object_and_changes_nothing(
    bucket: str, s3_env: dict[str, str], tmp_path: Path, s3_client: Any
) -> None:
    for key in ("dr/a", "dr/sub/b"):
        s3_client.put_object(Bucket=bucket, Key=key, Body=b"12345")
    dst = tmp_path / "new" / "d"
    result = cli("sync", f"s3://{bucket}/dr/", str(dst), "--dryrun", env=s3_env)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == [
        f"(dryrun) download: s3://{bucket}/dr/a to {dst}/a",
        f"(dryrun) download: s3://{bucket}/dr/sub/b to {dst}/sub/b",
    ]
    assert "(dryrun) would download 2 objects, 10 B" in result.stderr
    assert not (tmp_path / "new").exists()
    # Once synced, a dry run plans nothing and leaves no temporary behind.
    assert cli("sync", f"s3://{bucket}/dr/", str(dst), env=s3_env).returncode == 0
    before = _listing(dst)
    again = cli("sync", f"s3://{bucket}/dr/", str(dst), "--dryrun", env=s3_env)
    assert again.stdout == "" and "; 2 unchanged" in again.stderr
    assert _listing(dst) == before


def test_dryrun_upload_lists_each_file_and_puts_nothing(
    bucket: str, s3_env: dict[str, str], tmp_path: Path, s3_client: Any
) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_bytes(b"abc")
    result = cli("cp", "-r", str(tmp_path / "src"), f"s3://{bucket}/du/", "--dryrun", env=s3_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"(dryrun) upload: {tmp_path}/src/f to s3://{bucket}/du/f"
    ]
    assert "Contents" not in s3_client.list_objects_v2(Bucket=bucket, Prefix="du/")


def test_sync_delete_download_removes_extras_but_not_excluded_ones(
    bucket: str, s3_env: dict[str, str], tmp_path: Path, s3_client: Any
) -> None:
    s3_client.put_object(Bucket=bucket, Key="sd/keep", Body=b"k")
    dst = tmp_path / "d"
    (dst / "sub").mkdir(parents=True)
    for name in ("extra", "sub/extra", "notes.log"):
        (dst / name).write_bytes(b"local")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_bytes(b"p")
    (dst / "link").symlink_to(outside, target_is_directory=True)
    src = f"s3://{bucket}/sd/"
    dry = cli("sync", src, str(dst), "--delete", "--exclude", "*.log", "--dryrun", env=s3_env)
    assert dry.returncode == 0, dry.stderr
    assert f"(dryrun) delete: {dst}/sub/extra" in dry.stdout.splitlines()
    assert (dst / "sub" / "extra").exists()
    result = cli("sync", src, str(dst), "--delete", "--exclude", "*.log", env=s3_env)
    assert result.returncode == 0, result.stderr
    assert "; 3 deleted" in result.stderr  # extra, sub/extra and the symlink itself
    assert sorted(p.name for p in dst.rglob("*")) == ["keep", "notes.log", "sub"]
    assert (outside / "precious").read_bytes() == b"p"


def test_sync_delete_upload_removes_objects_not_in_the_directory(
    bucket: str, s3_env: dict[str, str], tmp_path: Path, s3_client: Any
) -> None:
    for key in ("su/old", "su/f", "su/skip.tmp"):
        s3_client.put_object(Bucket=bucket, Key=key, Body=b"o")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_bytes(b"new")
    src, dst = str(tmp_path / "src"), f"s3://{bucket}/su/"
    result = cli("sync", src, dst, "--delete", "--exclude", "*.tmp", env=s3_env)
    assert result.returncode == 0, result.stderr
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket, Prefix="su/")["Contents"]]
    assert sorted(keys) == ["su/f", "su/skip.tmp"]


def test_delete_with_cp_is_a_usage_error_pointing_to_sync(tmp_path: Path) -> None:
    result = cli("cp", "-r", "s3://bucket/p/", str(tmp_path), "--delete")
    assert result.returncode == 2
    assert "--delete is for sync" in result.stderr


def test_exact_timestamps_recopies_a_same_size_file_whose_mtime_differs(
    bucket: str, s3_env: dict[str, str], tmp_path: Path, s3_client: Any
) -> None:
    s3_client.put_object(Bucket=bucket, Key="et/f", Body=b"remote")
    dst = tmp_path / "d"
    dst.mkdir()
    (dst / "f").write_bytes(b"local!")  # same size, a minute newer than LastModified, no record
    modified = s3_client.head_object(Bucket=bucket, Key="et/f")["LastModified"].timestamp()
    os.utime(dst / "f", (modified + 60, modified + 60))
    src = f"s3://{bucket}/et/"
    plain = cli("sync", src, str(dst), env=s3_env)
    assert plain.returncode == 0 and (dst / "f").read_bytes() == b"local!", plain.stderr
    exact = cli("sync", src, str(dst), "--exact-timestamps", env=s3_env)
    assert exact.returncode == 0, exact.stderr
    assert (dst / "f").read_bytes() == b"remote"
    # Downloaded by us (the ETag record), it is now identical: skipped.
    again = cli("sync", src, str(dst), "--exact-timestamps", env=s3_env)
    assert "downloaded 0 objects" in again.stderr and "; 1 unchanged" in again.stderr


def test_exact_timestamps_without_the_record_skips_an_equal_mtime(
    bucket: str, s3_env: dict[str, str], tmp_path: Path, s3_client: Any
) -> None:
    s3_client.put_object(Bucket=bucket, Key="eq/f", Body=b"remote")
    modified = s3_client.head_object(Bucket=bucket, Key="eq/f")["LastModified"].timestamp()
    dst = tmp_path / "d"
    dst.mkdir()
    (dst / "f").write_bytes(b"local!")
    os.utime(dst / "f", (modified, modified))
    result = cli("sync", f"s3://{bucket}/eq/", str(dst), "--exact-timestamps", env=s3_env)
    assert result.returncode == 0 and "; 1 unchanged" in result.stderr, result.stderr
    assert (dst / "f").read_bytes() == b"local!"


def test_exact_timestamps_with_cp_is_a_usage_error(tmp_path: Path) -> None:
    result = cli("cp", "-r", "s3://bucket/p/", str(tmp_path), "--exact-timestamps")
    assert result.returncode == 2 and "--exact-timestamps is for sync" in result.stderr


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--part-size", "1K", "argument --part-size: expected a size from 5MiB to 5GiB, got '1K'"),
        ("--multipart-threshold", "1K", "--multipart-threshold: expected a size of at least 5MiB"),
        ("--workers", "100", "argument --workers: expected at most 64, got '100'"),
        ("--concurrency", "2000", "argument --concurrency: expected at most 1024, got '2000'"),
    ],
)
def test_option_errors_name_the_option_in_user_words(
    option: str, value: str, words: str, tmp_path: Path
) -> None:
    result = cli("cp", "s3://bucket/k", str(tmp_path / "k"), option, value)
    assert result.returncode == 2
    assert words in result.stderr and "TransferOptions" not in result.stderr


def test_dryrun_of_a_named_object_counts_its_size_and_a_missing_one_fails(
    bucket: str, s3_env: dict[str, str], tmp_path: Path, s3_client: Any
) -> None:
    s3_client.put_object(Bucket=bucket, Key="one/k", Body=b"x" * 1234)
    there = cli("cp", f"s3://{bucket}/one/k", f"{tmp_path}/", "--dryrun", env=s3_env)
    assert there.returncode == 0, there.stderr
    assert "(dryrun) would download 1 object, 1.2 KiB" in there.stderr
    gone = cli("cp", f"s3://{bucket}/one/absent", f"{tmp_path}/", "--dryrun", env=s3_env)
    assert gone.returncode == 1
    assert "not found" in gone.stderr and "would download 0 objects" in gone.stderr
    assert _listing(tmp_path) == []
