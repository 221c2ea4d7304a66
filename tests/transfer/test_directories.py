"""Directory markers (keys ending in ``/``) on download: the directory's mode and times
from its ``x-amz-meta-file-*`` keys are applied after every file inside has landed.

SeaweedFS (4.48) stores a ``dir/`` key as a filer directory and drops its user metadata
(``test_seaweedfs_drops_the_metadata_of_directory_markers`` pins that), so the tests
that need marker metadata run on moto; what SeaweedFS can show runs on SeaweedFS.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from tests.transfer.conftest import Run, settings_for, tree

from fsx_stage.transfer import S3Settings, TransferOptions
from fsx_stage.transfer.errors import RetryPolicy
from fsx_stage.transfer.local.posixmeta import PosixMeta, current_umask
from fsx_stage.transfer.models import TransferEvent
from fsx_stage.transfer.objects.context import Context
from fsx_stage.transfer.objects.download import apply_directory_metadata
from fsx_stage.transfer.s3.store import ObjectStore

OLD = 1_500_000_000_123_456_789  # 2017-07-14, in nanoseconds
OLDER = 1_400_000_000_987_654_321


def fsx_marker(mode: int, mtime_ns: int, atime_ns: int) -> dict[str, str]:
    """The metadata FSx for Lustre exports on a directory."""
    return {
        "file-permissions": f"0{stat.S_IFDIR | mode:o}",
        "file-mtime": f"{mtime_ns}ns",
        "file-atime": f"{atime_ns}ns",
        "file-owner": "0",
        "file-group": "0",
    }


@dataclass
class Store:
    client: Any
    bucket: str
    s3: S3Settings

    def marker(self, key: str, metadata: dict[str, str]) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=b"", Metadata=metadata)

    def file(self, key: str, body: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body)


@pytest.fixture
def store(moto_server: Any) -> Store:
    """A fresh bucket on moto, which keeps the metadata of ``dir/`` keys."""
    client = moto_server.client()
    name = f"dirs-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=name)
    return Store(client, name, settings_for(moto_server))


def test_seaweedfs_drops_the_metadata_of_directory_markers(bucket: str, s3_client: Any) -> None:
    """Why the marker-metadata tests run on moto; when this fails, move them to SeaweedFS."""
    s3_client.put_object(Bucket=bucket, Key="d/", Body=b"", Metadata=fsx_marker(0o750, OLD, OLD))
    assert s3_client.head_object(Bucket=bucket, Key="d/")["Metadata"] == {}


@pytest.fixture
def unprivileged_area() -> Iterator[Path]:
    """A directory ``nobody`` may write in (pytest's tmp is root-only)."""
    shared = Path(tempfile.mkdtemp(prefix="fsx-stage-dirs-"))
    shared.chmod(0o777)
    yield shared
    for path in [shared, *shared.rglob("*")]:  # read-only directories: make them removable
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(shared)


@pytest.mark.parametrize("workers", [1, 2])
def test_nested_markers_get_their_modes_and_times_after_the_files_inside(
    run: Run, store: Store, tmp_path: Path, workers: int
) -> None:
    # Listed first (``t/outer/`` sorts before its files), applied last.
    store.marker("t/outer/", fsx_marker(0o750, OLD, OLD + 7))
    store.marker("t/outer/inner/", fsx_marker(0o711, OLDER, OLDER + 3))
    for index in range(20):
        store.file(f"t/outer/f{index}", b"o" * index)
        store.file(f"t/outer/inner/g{index}", b"i" * index)
    dst = tmp_path / "dst"
    # One object at a time in this process: with workers=2 most files go to the worker.
    summary = run(
        f"s3://{store.bucket}/t/", dst, recursive=True, s3=store.s3, workers=workers, concurrency=1
    )
    assert summary.ok, summary.failures
    assert summary.objects_done == 42
    outer, inner = (dst / "outer").stat(), (dst / "outer" / "inner").stat()
    assert (stat.S_IMODE(outer.st_mode), outer.st_mtime_ns, outer.st_atime_ns) == (
        0o750,
        OLD,
        OLD + 7,
    )
    assert (stat.S_IMODE(inner.st_mode), inner.st_mtime_ns, inner.st_atime_ns) == (
        0o711,
        OLDER,
        OLDER + 3,
    )
    assert len(tree(dst)) == 40  # after the stats: listing a directory updates its atime


def test_a_marker_without_metadata_leaves_the_directory_as_created(
    run: Run, bucket: str, s3_client: Any, tmp_path: Path
) -> None:
    s3_client.put_object(Bucket=bucket, Key="m/plain/", Body=b"")
    s3_client.put_object(Bucket=bucket, Key="m/plain/f", Body=b"f")
    summary = run(f"s3://{bucket}/m/", tmp_path / "dst", recursive=True)
    assert summary.ok and summary.objects_done == 2
    as_created = 0o777 & ~current_umask()
    assert stat.S_IMODE((tmp_path / "dst" / "plain").stat().st_mode) == as_created


def test_a_marker_with_only_a_time_is_not_chmodded(run: Run, store: Store, tmp_path: Path) -> None:
    store.marker("m/timed/", {"file-mtime": f"{OLD}ns"})
    summary = run(f"s3://{store.bucket}/m/", tmp_path / "dst", recursive=True, s3=store.s3)
    assert summary.ok and summary.objects_done == 1
    timed = (tmp_path / "dst" / "timed").stat()
    assert stat.S_IMODE(timed.st_mode) == 0o777 & ~current_umask()  # x bits kept
    assert (timed.st_mtime_ns, timed.st_atime_ns) == (OLD, OLD)  # atime defaults to mtime


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_a_read_only_directory_still_receives_its_files_as_a_plain_user(
    run: Run, store: Store, unprivileged_area: Path
) -> None:
    """As a plain user (root ignores modes) a ``040555`` marker met before its files
    must not keep them out: the mode is applied after they have landed."""
    store.marker("ro/locked/", fsx_marker(0o555, OLD, OLD))
    store.marker("ro/locked/deeper/", fsx_marker(0o500, OLDER, OLDER))
    store.file("ro/locked/a.txt", b"a")
    store.file("ro/locked/deeper/b.txt", b"b")
    dst = unprivileged_area / "dst"
    pid = os.fork()
    if pid == 0:  # the child drops to nobody and reports through its exit status
        code = 99
        try:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            summary = run(f"s3://{store.bucket}/ro/", dst, recursive=True, s3=store.s3)
            code = 0 if summary.ok and summary.objects_done == 4 else 1
            if code:
                print(summary, file=sys.stderr)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert (dst / "locked" / "a.txt").read_bytes() == b"a"
    assert (dst / "locked" / "deeper" / "b.txt").read_bytes() == b"b"
    locked, deeper = (dst / "locked").stat(), (dst / "locked" / "deeper").stat()
    assert (stat.S_IMODE(locked.st_mode), locked.st_mtime_ns) == (0o555, OLD)
    assert (stat.S_IMODE(deeper.st_mode), deeper.st_mtime_ns) == (0o500, OLDER)
    assert locked.st_uid == deeper.st_uid == 65534


def test_an_empty_directory_round_trips_with_its_mode_and_times(
    run: Run, store: Store, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    (source / "full").mkdir(parents=True)
    (source / "full" / "file.txt").write_text("kept")
    empty = source / "full" / "empty"
    empty.mkdir()
    empty.chmod(0o750)
    os.utime(empty, ns=(OLDER, OLD))
    target = f"s3://{store.bucket}/rt/"
    assert run(source, target, recursive=True, s3=store.s3).ok
    uploaded = store.client.head_object(Bucket=store.bucket, Key="rt/full/empty/")["Metadata"]
    assert (uploaded["file-permissions"], uploaded["file-mtime"]) == ("040750", f"{OLD}ns")
    back = tmp_path / "back"
    summary = run(target, back, recursive=True, s3=store.s3)
    assert summary.ok and summary.objects_done == 2
    got = (back / "full" / "empty").stat()
    assert (stat.S_IMODE(got.st_mode), got.st_mtime_ns) == (0o750, OLD)
    assert f"{got.st_atime_ns}ns" == uploaded["file-atime"]  # the upload's walk read it
    assert tree(back) == tree(source)


def test_an_empty_directory_round_trips_through_seaweedfs_as_a_directory(
    run: Run, bucket: str, tmp_path: Path
) -> None:
    (tmp_path / "src" / "empty").mkdir(parents=True)
    assert run(tmp_path / "src", f"s3://{bucket}/rt/", recursive=True).ok
    summary = run(f"s3://{bucket}/rt/", tmp_path / "back", recursive=True)
    assert summary.ok and summary.objects_done == 1
    assert (tmp_path / "back" / "empty").is_dir()


def test_a_symlink_planted_at_a_markers_directory_is_not_followed(
    run: Run, store: Store, tmp_path: Path
) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    target.chmod(0o700)
    before = target.stat()
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "d").symlink_to(target)
    store.marker("sl/d/", fsx_marker(0o777, OLD, OLD))
    summary = run(f"s3://{store.bucket}/sl/", dst, recursive=True, s3=store.s3)
    assert [(f.key, f.category) for f in summary.failures] == [("sl/d/", "unsafe_key")]
    after = target.stat()
    assert (after.st_mode, after.st_mtime_ns) == (before.st_mode, before.st_mtime_ns)


def test_a_directory_swapped_for_a_symlink_before_the_metadata_is_applied(
    tmp_path: Path,
) -> None:
    """The directory is reopened from the root at the end, component by component with
    O_NOFOLLOW: a symlink put there meanwhile fails that marker, nothing else."""
    events: list[TransferEvent] = []
    ctx = Context(
        store=cast(ObjectStore, None),  # no request is made
        options=TransferOptions(),
        retry=RetryPolicy(1),
        report=events.append,
        umask=0o022,
        local_root=str(tmp_path),
    )
    target = tmp_path / "target"
    target.mkdir(0o700)
    target.chmod(0o700)
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "kept").mkdir()
    (root / "a" / "b").symlink_to(target)
    meta = PosixMeta(mode=stat.S_IFDIR | 0o777, mtime_ns=OLD)
    ctx.directory_meta += [
        ("p/a/b/", ["a", "b"], meta),
        ("p/gone/", ["gone"], meta),
        ("p/kept/", ["kept"], meta),
    ]
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        apply_directory_metadata(ctx, root_fd)
    finally:
        os.close(root_fd)
    assert [(e.kind, e.key, e.category) for e in events] == [
        ("failed", "p/a/b/", "unsafe_key"),
        ("failed", "p/gone/", "not_found"),
    ]
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    assert target.stat().st_mtime_ns != OLD
    kept = (root / "kept").stat()
    assert (stat.S_IMODE(kept.st_mode), kept.st_mtime_ns) == (0o777, OLD)
    assert ctx.directory_meta == []


def test_set_id_bits_of_a_directory_are_dropped_without_ownership(
    run: Run, store: Store, tmp_path: Path
) -> None:
    store.marker("sg/shared/", fsx_marker(0o2775, OLD, OLD))
    assert run(f"s3://{store.bucket}/sg/", tmp_path / "dst", recursive=True, s3=store.s3).ok
    assert stat.S_IMODE((tmp_path / "dst" / "shared").stat().st_mode) == 0o775


@pytest.mark.skipif(os.geteuid() != 0, reason="restoring ownership needs root")
def test_ownership_and_set_gid_of_a_directory_are_restored_only_when_asked(
    run: Run, store: Store, tmp_path: Path
) -> None:
    store.marker(
        "own/team/", {**fsx_marker(0o2770, OLD, OLD), "file-owner": "1234", "file-group": "4321"}
    )
    source = f"s3://{store.bucket}/own/"
    assert run(source, tmp_path / "plain", recursive=True, s3=store.s3).ok
    plain = (tmp_path / "plain" / "team").stat()
    assert (plain.st_uid, plain.st_gid, stat.S_IMODE(plain.st_mode)) == (
        os.geteuid(),
        os.getegid(),
        0o770,
    )
    assert run(source, tmp_path / "owned", recursive=True, s3=store.s3, preserve_owner=True).ok
    owned = (tmp_path / "owned" / "team").stat()
    assert (owned.st_uid, owned.st_gid, stat.S_IMODE(owned.st_mode)) == (1234, 4321, 0o2770)


def test_sync_leaves_an_existing_directory_alone(run: Run, store: Store, tmp_path: Path) -> None:
    store.marker("sy/there/", fsx_marker(0o700, OLD, OLD))
    dst = tmp_path / "dst"
    (dst / "there").mkdir(parents=True)
    (dst / "there").chmod(0o755)
    summary = run(f"s3://{store.bucket}/sy/", dst, recursive=True, s3=store.s3, sync=True)
    assert summary.ok and summary.objects_skipped == 1
    assert stat.S_IMODE((dst / "there").stat().st_mode) == 0o755
