"""The ``fsx-stage cp``/``sync`` contract: exit statuses, output, interruption and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tests.transfer.conftest import tree

MiB = 1024 * 1024


def cli(
    *args: str, env: dict[str, str] | None = None, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fsx_stage", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        **kwargs,
    )


def spawn(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fsx_stage", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


@pytest.mark.parametrize(
    "args",
    [
        ["cp", "/tmp/a", "/tmp/b"],
        ["cp", "s3://bucket/a", "s3://bucket/b"],
        ["cp", "s3://bucket/a", "/tmp/b", "--part-size", "lots"],
        ["cp", "s3://bucket/a", "/tmp/b", "--concurrency", "0"],
        ["cp", "s3://bucket/prefix/", "/tmp/b"],
        ["cp", "s3://Bad_Bucket/a", "/tmp/b"],
        ["sync", "s3://bucket/a"],
        ["cp", "s3://bucket/a", "s3://other/b", "/tmp/d/"],
        ["cp", "s3://bucket/a", "s3://bucket/p/", "/tmp/d/"],
        ["cp", "s3://bucket/a", "s3://bucket/b", "/tmp/d/", "--recursive"],
        ["cp", "s3://bucket/x/a", "s3://bucket/y/a", "/tmp/d/"],
        ["cp", "s3://bucket/a", "s3://bucket/b", "/tmp/no-such-dir-and-no-slash"],
        ["cp", "/tmp/a", "/tmp/b", "s3://bucket/p/"],
    ],
)
def test_bad_usage_exits_2(args: list[str]) -> None:
    result = cli(*args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip()


def test_json_events_and_summary(bucket: str, s3_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    for name in ("a", "b"):
        (tmp_path / "src" / name).write_bytes(b"x" * 10)
    result = cli(
        "cp", str(tmp_path / "src"), f"s3://{bucket}/j/", "--recursive", "--json", env=s3_env
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(r["key"] for r in lines if r["event"] == "done") == ["j/a", "j/b"]
    assert lines[-1]["event"] == "summary" and lines[-1]["ok"] is True
    assert lines[-1]["objects_done"] == 2 and lines[-1]["bytes_done"] == 20


def test_failures_exit_1_and_are_listed_on_stderr(
    bucket: str, s3_env: dict[str, str], tmp_path: Path, s3_client: Any
) -> None:
    s3_client.put_object(Bucket=bucket, Key="p/good", Body=b"g")
    result = cli("cp", f"s3://{bucket}/p/missing", str(tmp_path / "m"), "--no-progress", env=s3_env)
    assert result.returncode == 1
    assert "p/missing" in result.stderr and "not_found" in result.stderr
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in result.stderr + result.stdout


def test_a_list_of_objects_lands_in_the_directory_each_under_its_name(
    bucket: str, s3_env: dict[str, str], tmp_path: Path, s3_client: Any
) -> None:
    bodies = {"in/a.txt": b"a", "in/deep/b.bin": b"b" * 70_000, "other/c": os.urandom(6 * MiB)}
    for key, body in bodies.items():
        s3_client.put_object(Bucket=bucket, Key=key, Body=body)
    sources = [f"s3://{bucket}/{key}" for key in bodies]
    result = cli("cp", *sources, f"{tmp_path}/d/", "--json", env=s3_env)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["a.txt", "b.bin", "c"]
    for key, body in bodies.items():
        assert (tmp_path / "d" / key.rsplit("/", 1)[-1]).read_bytes() == body
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["objects_done"] == 3

    again = cli("sync", *sources, f"{tmp_path}/d/", "--json", env=s3_env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.splitlines()[-1])["objects_skipped"] == 3


def test_a_missing_object_in_a_list_fails_alone(
    bucket: str, s3_env: dict[str, str], tmp_path: Path, s3_client: Any
) -> None:
    s3_client.put_object(Bucket=bucket, Key="l/here", Body=b"here")
    result = cli(
        "cp",
        f"s3://{bucket}/l/here",
        f"s3://{bucket}/l/gone",
        f"{tmp_path}/",
        "--no-progress",
        env=s3_env,
    )
    assert result.returncode == 1
    assert "l/gone" in result.stderr and "not_found" in result.stderr
    assert (tmp_path / "here").read_bytes() == b"here"
    assert not (tmp_path / "gone").exists()


def test_endpoint_url_option_wins(
    bucket: str, s3_env: dict[str, str], tmp_path: Path, s3_client: Any
) -> None:
    s3_client.put_object(Bucket=bucket, Key="e", Body=b"endpoint")
    env = {**s3_env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}  # nothing listens there
    result = cli(
        "cp",
        f"s3://{bucket}/e",
        str(tmp_path / "e"),
        "--no-progress",
        "--endpoint-url",
        s3_env["AWS_ENDPOINT_URL"],
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "e").read_bytes() == b"endpoint"


def _slow_source(bucket: str, s3_client: Any) -> dict[str, bytes]:
    contents = {f"f{i:03d}": os.urandom(50_000) for i in range(60)}
    contents["big"] = os.urandom(12 * MiB)
    for name, body in contents.items():
        s3_client.put_object(Bucket=bucket, Key=f"k/{name}", Body=body)
    return contents


def _assert_no_torn_files(dst: Path, contents: dict[str, bytes]) -> None:
    if not dst.exists():
        return
    for path in dst.iterdir():
        if path.name.endswith(".fsxpart"):
            continue  # a temporary may survive kill -9; it never has a final name
        assert path.read_bytes() == contents[path.name], f"torn file {path.name}"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_kill_9_leaves_no_torn_file_and_a_rerun_completes(
    bucket: str,
    s3_env: dict[str, str],
    s3_client: Any,
    fault_proxy: Any,
    tmp_path: Path,
    workers: str,
) -> None:
    contents = _slow_source(bucket, s3_client)
    fault_proxy.set_faults(methods={"GET"}, latency_s=0.3, latency_rate=1.0)
    dst = tmp_path / "dst"
    env = {**s3_env, "AWS_ENDPOINT_URL": fault_proxy.endpoint_url}
    args = (
        "cp",
        f"s3://{bucket}/k/",
        str(dst),
        "--recursive",
        "--no-progress",
        "--concurrency",
        "4",
        "--workers",
        workers,
        "--part-size",
        "5MiB",
        "--multipart-threshold",
        "5MiB",
    )
    proc = spawn(*args, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(dst.glob("f*"))) < 5:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    _assert_no_torn_files(dst, contents)
    assert len(list(dst.glob("f*"))) < len(contents)  # it really was interrupted

    fault_proxy.set_faults()
    rerun = cli(*args, env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert tree(dst) == contents  # complete, and no temporaries left behind


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_stops_cleanly(
    bucket: str,
    s3_env: dict[str, str],
    s3_client: Any,
    fault_proxy: Any,
    tmp_path: Path,
    workers: str,
) -> None:
    contents = _slow_source(bucket, s3_client)
    fault_proxy.set_faults(methods={"GET"}, latency_s=0.3, latency_rate=1.0)
    dst = tmp_path / "dst"
    env = {**s3_env, "AWS_ENDPOINT_URL": fault_proxy.endpoint_url}
    proc = spawn(
        "sync",
        f"s3://{bucket}/k/",
        str(dst),
        "--no-progress",
        "--concurrency",
        "4",
        "--workers",
        workers,
        env=env,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(dst.glob("f*"))) < 5:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "cancelled" in stderr
    _assert_no_torn_files(dst, contents)
    assert not list(dst.glob("*.fsxpart"))  # a clean stop removes its temporaries


def test_a_worker_killed_mid_transfer_is_reported_not_lost(
    bucket: str, s3_env: dict[str, str], s3_client: Any, fault_proxy: Any, tmp_path: Path
) -> None:
    contents = _slow_source(bucket, s3_client)
    fault_proxy.set_faults(methods={"GET"}, latency_s=0.3, latency_rate=1.0)
    dst = tmp_path / "dst"
    env = {**s3_env, "AWS_ENDPOINT_URL": fault_proxy.endpoint_url}
    proc = spawn(
        "cp",
        f"s3://{bucket}/k/",
        str(dst),
        "--recursive",
        "--no-progress",
        "--concurrency",
        "4",
        "--workers",
        "2",
        env=env,
    )
    deadline = time.monotonic() + 60
    children: list[int] = []
    while time.monotonic() < deadline and not children:
        time.sleep(0.1)
        path = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        children = [int(pid) for pid in path.read_text().split()] if path.exists() else []
        if len(list(dst.glob("f*"))) < 2:
            children = []
    os.kill(children[0], signal.SIGKILL)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "worker process ended" in stderr
    _assert_no_torn_files(dst, contents)


@pytest.mark.parametrize("encoding", ["raw", "base64"])
def test_sse_c_key_file(bucket: str, s3_env: dict[str, str], tmp_path: Path, encoding: str) -> None:
    import base64

    raw = os.urandom(32)
    key_file = tmp_path / "key"
    key_file.write_bytes(raw if encoding == "raw" else base64.b64encode(raw) + b"\n")
    (tmp_path / "f").write_bytes(b"sealed")
    url = f"s3://{bucket}/sealed"
    key = ("--sse-c-key-file", str(key_file))
    assert cli("cp", str(tmp_path / "f"), url, "--no-progress", *key, env=s3_env).returncode == 0
    without = cli("cp", url, str(tmp_path / "a"), "--no-progress", env=s3_env)
    assert without.returncode == 1 and not (tmp_path / "a").exists()
    with_key = cli("cp", url, str(tmp_path / "b"), "--no-progress", *key, env=s3_env)
    assert with_key.returncode == 0 and (tmp_path / "b").read_bytes() == b"sealed"
    assert base64.b64encode(raw).decode() not in without.stderr + with_key.stderr


def test_a_bad_sse_c_key_file_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "short").write_bytes(b"too short")
    result = cli(
        "cp", "s3://bucket/k", str(tmp_path / "x"), "--sse-c-key-file", str(tmp_path / "short")
    )
    assert result.returncode == 2 and "32 raw bytes" in result.stderr
