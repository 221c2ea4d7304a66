"""Round trips through SeaweedFS: sizes, awkward keys, many keys, metadata, filters, sync."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.transfer.conftest import Run, tree

from fsx_stage.filters import Filter

MiB = 1024 * 1024
PART = 5 * MiB  # the smallest part S3 allows; tests use it to get multipart cheaply
SMALL_PARTS = {"part_size": PART, "multipart_threshold": PART}


@pytest.mark.parametrize("size", [0, 1, PART, PART + 1, 3 * PART + 12345])
def test_single_object_round_trip_is_byte_identical(
    run: Run, bucket: str, tmp_path: Path, size: int
) -> None:
    source = tmp_path / "source.bin"
    # sparse-style: a random head and tail around a hole of zeros
    with source.open("wb") as handle:
        handle.write(os.urandom(min(size, 4096)))
        if size > 8192:
            handle.seek(size - 4096)
            handle.write(os.urandom(4096))
        handle.truncate(size)
    up = run(source, f"s3://{bucket}/objects/", **SMALL_PARTS)
    assert up.ok and up.objects_done == 1 and up.bytes_done == size
    down = run(f"s3://{bucket}/objects/source.bin", tmp_path / "back.bin", **SMALL_PARTS)
    assert down.ok and down.bytes_done == size
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()


def test_large_object_with_default_adaptive_parts(run: Run, bucket: str, tmp_path: Path) -> None:
    source = tmp_path / "large.bin"
    source.write_bytes(os.urandom(40 * MiB + 7))
    assert run(source, f"s3://{bucket}/large.bin").ok
    summary = run(f"s3://{bucket}/large.bin", f"{tmp_path}/out/", concurrency=8)
    assert summary.ok
    assert (tmp_path / "out" / "large.bin").read_bytes() == source.read_bytes()


AWKWARD = ["with space.txt", "ünïcødé/файл.txt", "plus+sign.txt", "per%cent%20.txt", "a/b/c/d.txt"]


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "botocore-only"])
def test_awkward_keys_round_trip(
    run: Run,
    bucket: str,
    tmp_path: Path,
    s3_client: Any,
    fast_path: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not fast_path:
        monkeypatch.setenv("FSX_STAGE_NO_FASTPATH", "1")
    source = tmp_path / "src"
    for name in AWKWARD:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(name)
    assert run(source, f"s3://{bucket}/awk", recursive=True).ok
    keys = {o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {f"awk/{name}" for name in AWKWARD}
    summary = run(f"s3://{bucket}/awk/", tmp_path / "dst", recursive=True)
    assert summary.ok and summary.objects_done == len(AWKWARD)
    assert tree(tmp_path / "dst") == tree(source)


def test_thousands_of_keys_across_listing_pages_with_worker_processes(
    run: Run, bucket: str, tmp_path: Path
) -> None:
    source = tmp_path / "many"
    for index in range(2100):
        sub = source / f"d{index % 7}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{index:05d}").write_bytes(index.to_bytes(4, "big") * (index % 5))
    up = run(source, f"s3://{bucket}/many/", recursive=True, workers=2)
    assert up.ok and up.objects_done == 2100
    down = run(f"s3://{bucket}/many/", tmp_path / "back", recursive=True, workers=2)
    assert down.ok and down.objects_done == 2100
    assert tree(tmp_path / "back") == tree(source)


def test_posix_metadata_round_trips(run: Run, bucket: str, tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "empty-dir").mkdir(parents=True)
    script = source / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o750)
    os.utime(script, ns=(1_600_000_000_123_456_789, 1_700_000_000_987_654_321))
    (source / "link").symlink_to("run.sh")
    assert run(source, f"s3://{bucket}/meta", recursive=True).ok
    assert run(f"s3://{bucket}/meta", tmp_path / "dst", recursive=True).ok
    back = tmp_path / "dst" / "run.sh"
    st = back.stat()
    assert stat.S_IMODE(st.st_mode) == 0o750
    assert st.st_mtime_ns == 1_700_000_000_987_654_321
    assert os.readlink(tmp_path / "dst" / "link") == "run.sh"
    assert (tmp_path / "dst" / "empty-dir").is_dir()


def test_setid_bits_are_not_restored_without_ownership(
    run: Run, bucket: str, tmp_path: Path, s3_client: Any
) -> None:
    s3_client.put_object(
        Bucket=bucket, Key="suid", Body=b"#!/bin/sh\n", Metadata={"file-permissions": "0104755"}
    )
    assert run(f"s3://{bucket}/suid", tmp_path / "suid").ok
    assert stat.S_IMODE((tmp_path / "suid").stat().st_mode) == 0o755


def test_include_and_exclude_select_relative_paths(run: Run, bucket: str, tmp_path: Path) -> None:
    source = tmp_path / "src"
    for name in ["a.txt", "b.bin", "logs/x.log", "logs/keep.txt", "deep/c.txt"]:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(name)
    exclude_logs = (Filter(action="exclude", pattern="logs/*"),)
    assert run(source, f"s3://{bucket}/f/", recursive=True, filters=exclude_logs).ok
    only_txt = (Filter(action="exclude", pattern="*"), Filter(action="include", pattern="*.txt"))
    summary = run(f"s3://{bucket}/f/", tmp_path / "dst", recursive=True, filters=only_txt)
    assert summary.ok
    assert sorted(tree(tmp_path / "dst")) == ["a.txt", "deep/c.txt"]
    # The last matching filter decides: an exclude after the include wins.
    nothing = (*only_txt, Filter(action="exclude", pattern="*"))
    summary = run(f"s3://{bucket}/f/", tmp_path / "none", recursive=True, filters=nothing)
    assert summary.ok and summary.objects_done == 0


def test_sync_moves_only_what_changed(run: Run, bucket: str, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for index in range(5):
        (source / f"f{index}").write_bytes(os.urandom(1000))
    first = run(source, f"s3://{bucket}/s/", recursive=True, sync=True)
    assert (first.objects_done, first.objects_skipped) == (5, 0)
    (source / "f1").write_bytes(os.urandom(1000))  # same size, new mtime
    (source / "f5").write_bytes(b"new")
    second = run(source, f"s3://{bucket}/s/", recursive=True, sync=True)
    assert (second.objects_done, second.objects_skipped) == (2, 4)

    down = run(f"s3://{bucket}/s/", tmp_path / "dst", recursive=True, sync=True)
    assert (down.objects_done, down.objects_skipped) == (6, 0)
    again = run(f"s3://{bucket}/s/", tmp_path / "dst", recursive=True, sync=True)
    assert (again.objects_done, again.objects_skipped) == (0, 6)
    (tmp_path / "dst" / "f2").write_bytes(os.urandom(1000))  # local edit: fetched again
    third = run(f"s3://{bucket}/s/", tmp_path / "dst", recursive=True, sync=True)
    assert (third.objects_done, third.objects_skipped) == (1, 5)
    assert tree(tmp_path / "dst") == tree(source)


def test_missing_object_fails_with_its_key_and_not_found(
    run: Run, bucket: str, tmp_path: Path
) -> None:
    summary = run(f"s3://{bucket}/no/such/key", tmp_path / "x")
    assert not summary.ok
    assert [(f.key, f.category) for f in summary.failures] == [("no/such/key", "not_found")]
    assert not (tmp_path / "x").exists()


def test_the_fast_path_attaches_to_seaweedfs(s3: Any, bucket: str) -> None:
    """Small GETs/PUTs bypass botocore's pipeline where the server accepts our requests."""
    import asyncio

    from fsx_stage.transfer.s3.botocore_client import create_client
    from fsx_stage.transfer.s3.direct_client import FastS3

    async def attach() -> bool:
        async with create_client(s3, 4) as client:
            fast = await FastS3.attach(client, bucket, 4, 5.0, 5.0)
            if fast is None:
                return False
            await fast.close()
            return True

    assert asyncio.run(attach())


def test_worker_processes_start_fresh_when_the_caller_runs_threads(
    run: Run, bucket: str, tmp_path: Path
) -> None:
    """With other threads alive forking is unsafe: workers are started as new processes."""
    import threading

    source = tmp_path / "src"
    source.mkdir()
    for index in range(40):
        (source / f"f{index}").write_bytes(os.urandom(100))
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        assert run(source, f"s3://{bucket}/t/", recursive=True, workers=2).objects_done == 40
        down = run(f"s3://{bucket}/t/", tmp_path / "dst", recursive=True, workers=2)
    finally:
        release.set()
        other.join()
    assert down.ok and tree(tmp_path / "dst") == tree(source)


@pytest.mark.skipif(os.geteuid() != 0, reason="restoring ownership needs root")
def test_ownership_is_restored_only_when_asked(run: Run, bucket: str, tmp_path: Path) -> None:
    source = tmp_path / "owned"
    source.write_bytes(b"data")
    os.chown(source, 1234, 4321)
    assert run(source, f"s3://{bucket}/owned").ok
    assert run(f"s3://{bucket}/owned", tmp_path / "plain").ok
    plain = (tmp_path / "plain").stat()
    assert (plain.st_uid, plain.st_gid) == (os.geteuid(), os.getegid())
    assert run(f"s3://{bucket}/owned", tmp_path / "restored", preserve_owner=True).ok
    restored = (tmp_path / "restored").stat()
    assert (restored.st_uid, restored.st_gid) == (1234, 4321)


@pytest.mark.parametrize("recursive", [False, True])
def test_a_missing_local_source_fails_as_not_found(
    run: Run, bucket: str, tmp_path: Path, recursive: bool
) -> None:
    summary = run(tmp_path / "absent", f"s3://{bucket}/x/", recursive=recursive)
    assert [f.category for f in summary.failures] == ["not_found"]
    assert "absent" in summary.failures[0].reason


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_sync_skips_after_a_privilege_drop(
    run: Run, bucket: str, tmp_path: Path, s3_client: Any
) -> None:
    """The hooks run us as the job user after setuid: /proc/self is then root's (the
    process is not dumpable), so nothing we rely on may go through /proc/self/fd."""
    for index in range(3):
        s3_client.put_object(Bucket=bucket, Key=f"p/f{index}", Body=b"x" * index)
    import shutil
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="fsx-stage-nobody-"))  # pytest's tmp is root-only
    shared.chmod(0o777)
    dst = shared / "dst"
    pid = os.fork()
    if pid == 0:  # the child drops to nobody, syncs twice, reports through its exit status
        code = 99
        try:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            first = run(f"s3://{bucket}/p/", dst, recursive=True, sync=True)
            again = run(f"s3://{bucket}/p/", dst, recursive=True, sync=True)
            code = 0 if (first.objects_done, again.objects_skipped) == (3, 3) else 1
            if code:
                print(first, again, file=sys.stderr)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    try:
        assert os.waitstatus_to_exitcode(status) == 0
        assert (dst / "f2").stat().st_uid == 65534
    finally:
        shutil.rmtree(shared)
