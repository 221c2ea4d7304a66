"""What ``fsx-stage cp``/``sync`` tell a person: the summary, an empty source, many failures."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

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
