"""Checkpoint generations against SeaweedFS: manifest last, newest complete restores,
deleted files stay deleted, a rewriting writer never yields a torn or mixed file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from tests.testbed.clock import FakeClock

from fsx_stage.checkpoints import generations
from fsx_stage.checkpoints.generations import GenerationError, Generations
from fsx_stage.transfer import S3Settings, TransferOptions

OPTIONS = TransferOptions(workers=1)


def write(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def keys(s3_client: Any, bucket: str, prefix: str) -> list[str]:
    reply = s3_client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for item in reply.get("Contents", []))


def test_a_generation_is_published_with_its_manifest_and_restores_exactly(
    s3: S3Settings, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    src = tmp_path / "ckpt"
    write(src, {"a": b"A" * 10, "sub/b": b"B" * 20})
    gens = Generations(f"s3://{bucket}/ck/", s3)
    first = gens.publish(str(src), OPTIONS)
    assert (first.generation, first.files, first.bytes) == (1, 2, 30)
    body = s3_client.get_object(Bucket=bucket, Key="ck/.fsx-stage/manifests/1.json")["Body"]
    manifest = json.loads(body.read())
    assert [(f["path"], f["size"]) for f in manifest["files"]] == [("a", 10), ("sub/b", 20)]
    assert all(f["etag"] for f in manifest["files"])  # the checksum S3 confirmed

    (src / "a").unlink()  # deleted on scratch: must not come back
    write(src, {"sub/b": b"b2", "c": b"C"})
    second = gens.publish(str(src), OPTIONS)
    assert second.generation == 2
    back = tmp_path / "back"
    restored = gens.restore(str(back), OPTIONS)
    assert restored.generation == 2 and restored.summary.ok
    assert files_of(back) == {"sub/b": b"b2", "c": b"C"}


def test_keep_removes_older_generations_only_after_a_newer_one_is_complete(
    s3: S3Settings, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    src = tmp_path / "ckpt"
    gens = Generations(f"s3://{bucket}/ck/", s3)
    for n in range(1, 5):
        write(src, {"state": f"step {n}".encode()})
        result = gens.publish(str(src), OPTIONS, keep=2)
        assert result.generation == n
    assert keys(s3_client, bucket, "ck/.fsx-stage/manifests/") == [
        "ck/.fsx-stage/manifests/3.json",
        "ck/.fsx-stage/manifests/4.json",
    ]
    assert keys(s3_client, bucket, "ck/.fsx-stage/gen/") == [
        "ck/.fsx-stage/gen/3/state",
        "ck/.fsx-stage/gen/4/state",
    ]


def test_an_interrupted_flush_is_never_restored_and_is_pruned_once_abandoned(
    s3: S3Settings, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    src = tmp_path / "ckpt"
    write(src, {"a": b"old-a", "b": b"old-b"})
    clock = FakeClock(time.time())
    gens = Generations(f"s3://{bucket}/ck/", s3, clock)
    gens.publish(str(src), OPTIONS)
    # Generation 2 died after uploading one object, before its manifest.
    s3_client.put_object(Bucket=bucket, Key="ck/.fsx-stage/claims/2.json", Body=b"{}")
    s3_client.put_object(Bucket=bucket, Key="ck/.fsx-stage/gen/2/a", Body=b"new-a")
    back = tmp_path / "back"
    assert gens.restore(str(back), OPTIONS).generation == 1
    assert files_of(back) == {"a": b"old-a", "b": b"old-b"}  # never a mix of 1 and 2
    write(src, {"a": b"third"})
    assert gens.publish(str(src), OPTIONS, keep=1).generation == 3
    assert keys(s3_client, bucket, "ck/.fsx-stage/") == [  # 2's publisher may still be at work
        "ck/.fsx-stage/claims/2.json",
        "ck/.fsx-stage/gen/1/b",  # unchanged: generation 3 names generation 1's object
        "ck/.fsx-stage/gen/2/a",
        "ck/.fsx-stage/gen/3/a",
        "ck/.fsx-stage/manifests/3.json",
    ]
    clock.advance(generations.ABANDONED_AFTER_S + 60)
    write(src, {"a": b"fourth"})
    assert gens.publish(str(src), OPTIONS, keep=1).removed_generations == [2, 3]
    assert keys(s3_client, bucket, "ck/.fsx-stage/") == [
        "ck/.fsx-stage/gen/1/b",
        "ck/.fsx-stage/gen/4/a",
        "ck/.fsx-stage/manifests/4.json",
    ]


def test_two_publishers_of_one_prefix_never_share_or_prune_each_others_generation(
    s3: S3Settings, s3_client: Any, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second job publishes into the prefix while the first is uploading (between the
    first's number and its manifest): each gets its own number, the second's prune leaves
    the first's unfinished generation alone, and both generations are complete."""
    first, second = tmp_path / "first", tmp_path / "second"
    write(first, {"a": b"first-a", "b": b"first-b"})
    write(second, {"a": b"second-a"})
    gens = Generations(f"s3://{bucket}/ck/", s3)
    real = generations.transfer
    published: list[int | None] = []

    def meanwhile(source: str, *args: Any, **kwargs: Any) -> Any:
        summary = real(source, *args, **kwargs)
        if not published:  # the first publisher's upload is done, its manifest is not
            monkeypatch.setattr(generations, "transfer", real)
            published.append(
                Generations(f"s3://{bucket}/ck/", s3)
                .publish(str(second), OPTIONS, keep=1)
                .generation
            )
        return summary

    monkeypatch.setattr(generations, "transfer", meanwhile)
    assert gens.publish(str(first), OPTIONS, keep=1).generation == 1
    assert published == [2]
    for n, tree in ((1, first), (2, second)):
        manifest = gens.manifest(n)
        assert manifest.intact(gens.store.keys(".fsx-stage/")), n
        assert {f.path: f.stored_in for f in manifest.files} == {p: n for p in files_of(tree)}
    assert keys(s3_client, bucket, "ck/.fsx-stage/claims/") == []
    back = tmp_path / "back"
    assert gens.restore(str(back), OPTIONS).generation == 2
    assert files_of(back) == {"a": b"second-a"}


def test_a_generation_whose_earlier_object_another_writer_pruned_is_discarded(
    s3: S3Settings, s3_client: Any, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first publisher reuses generation 1's unchanged object; a second job publishes
    with keep=1 meanwhile and prunes generation 1. The first's manifest would name a
    missing object: it is not published (nothing left of it), and the next try is."""
    first, second = tmp_path / "first", tmp_path / "second"
    write(first, {"same": b"S", "new": b"N0"})
    write(second, {"other": b"O"})
    gens = Generations(f"s3://{bucket}/ck/", s3)
    assert gens.publish(str(first), OPTIONS).generation == 1
    write(first, {"new": b"N1"})
    real = generations.transfer

    def meanwhile(source: str, *args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(generations, "transfer", real)
        summary = real(source, *args, **kwargs)
        assert Generations(f"s3://{bucket}/ck/", s3).publish(
            str(second), OPTIONS, keep=1
        ).removed_generations == [1]
        return summary

    monkeypatch.setattr(generations, "transfer", meanwhile)
    with pytest.raises(GenerationError, match="generation 2: an object it names was removed"):
        gens.publish(str(first), OPTIONS, keep=1)
    assert keys(s3_client, bucket, "ck/.fsx-stage/") == [
        "ck/.fsx-stage/gen/3/other",
        "ck/.fsx-stage/manifests/3.json",
    ]
    assert gens.publish(str(first), OPTIONS, keep=1).generation == 4  # the retry
    back = tmp_path / "back"
    assert gens.restore(str(back), OPTIONS).generation == 4
    assert files_of(back) == {"same": b"S", "new": b"N1"}


def test_a_manifest_whose_objects_are_missing_is_not_complete(
    s3: S3Settings, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    src = tmp_path / "ckpt"
    gens = Generations(f"s3://{bucket}/ck/", s3)
    write(src, {"a": b"one"})
    gens.publish(str(src), OPTIONS)
    write(src, {"a": b"two"})
    gens.publish(str(src), OPTIONS)
    s3_client.delete_object(Bucket=bucket, Key="ck/.fsx-stage/gen/2/a")
    back = tmp_path / "back"
    assert gens.restore(str(back), OPTIONS).generation == 1
    assert files_of(back) == {"a": b"one"}


def test_a_generation_number_is_published_once(
    s3: S3Settings, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    gens = Generations(f"s3://{bucket}/ck/", s3)
    assert gens.store.put_new(".fsx-stage/manifests/7.json", b"{}")
    assert not gens.store.put_new(".fsx-stage/manifests/7.json", b"{}")  # If-None-Match: *


def test_objects_written_before_generations_still_restore(
    s3: S3Settings, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    s3_client.put_object(Bucket=bucket, Key="ck/state", Body=b"legacy")
    s3_client.put_object(Bucket=bucket, Key="ck/.fsx-stage/gen/1/x", Body=b"orphan")
    back = tmp_path / "back"
    result = Generations(f"s3://{bucket}/ck/", s3).restore(str(back), OPTIONS)
    assert result.generation is None and result.summary.ok
    assert files_of(back) == {"state": b"legacy"}


def test_a_file_rewritten_during_every_upload_discards_the_generation(
    s3: S3Settings, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "ckpt"
    write(src, {"steady": b"s", "busy": b"v0"})
    gens = Generations(f"s3://{bucket}/ck/", s3)
    real = generations.transfer
    count = iter(range(1, 1000))

    def rewriting(source: str, *args: Any, **kwargs: Any) -> Any:
        summary = real(source, *args, **kwargs)
        (src / "busy").write_bytes(f"v{next(count)}".encode())  # the job keeps writing
        return summary

    monkeypatch.setattr(generations, "transfer", rewriting)
    with pytest.raises(GenerationError, match="busy: changed during every one of 3 uploads"):
        gens.publish(str(src), OPTIONS)
    monkeypatch.setattr(generations, "transfer", real)
    assert gens.newest_complete() is None
    assert gens.store.keys(".fsx-stage/gen/") == {}


def test_a_writer_rewriting_files_during_flushes_never_yields_a_torn_or_mixed_file(
    s3: S3Settings, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    """Each file holds one version number repeated; a restored file must be one version
    throughout, and equal to what the manifest says for that generation."""
    src = tmp_path / "ckpt"
    size = 256 * 1024
    write(src, {f"f{i}": b"0" * size for i in range(4)})
    stop = threading.Event()

    def writer() -> None:
        version = 0
        while not stop.is_set():
            version += 1
            for i in range(4):
                data = str(version % 10).encode() * size
                with open(src / f"f{i}", "r+b") as handle:  # in place: a reader can see a tear
                    for off in range(0, size, 16 * 1024):
                        handle.seek(off)
                        handle.write(data[off : off + 16 * 1024])
            stop.wait(0.05)

    thread = threading.Thread(target=writer)
    thread.start()
    gens = Generations(f"s3://{bucket}/ck/", s3)
    published = []
    try:
        for _ in range(4):
            # A file that never held still publishes nothing, which is allowed.
            with contextlib.suppress(GenerationError):
                published.append(gens.publish(str(src), OPTIONS, keep=10).generation)
    finally:
        stop.set()
        thread.join()
    final = gens.publish(str(src), OPTIONS, keep=10)  # writer stopped: must publish
    assert final.generation is not None
    restored = tmp_path / "restored"
    assert gens.restore(str(restored), OPTIONS).generation == final.generation
    assert files_of(restored) == files_of(src)  # the newest generation, byte-identical
    for n in [*[p for p in published if p is not None], final.generation]:
        manifest = gens.manifest(n)
        assert sorted(f.path for f in manifest.files) == [f"f{i}" for i in range(4)]
        for f in manifest.files:  # each from the object the manifest names (maybe older)
            data = s3_client.get_object(Bucket=bucket, Key=f"ck/{f.key}")["Body"].read()
            assert len(data) == size and len(set(data)) == 1, f"generation {n}: {f.path} torn"
            assert hashlib.sha256(data).hexdigest() == f.sha256


def test_unchanged_files_are_not_uploaded_again_and_referenced_objects_survive_pruning(
    s3: S3Settings, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    src = tmp_path / "ckpt"
    write(src, {f"f{i:03}": f"file {i} ".encode() * 100 for i in range(100)})
    gens = Generations(f"s3://{bucket}/ck/", s3)
    first = gens.publish(str(src), OPTIONS, keep=1)
    assert first.summary.objects_done == 100
    write(src, {"f042": b"changed"})
    second = gens.publish(str(src), OPTIONS, keep=1)  # keep=1: generation 1 is pruned
    assert (second.generation, second.files) == (2, 100)
    assert (second.summary.objects_done, second.summary.bytes_done) == (1, len(b"changed"))
    assert keys(s3_client, bucket, "ck/.fsx-stage/gen/2/") == ["ck/.fsx-stage/gen/2/f042"]
    assert keys(s3_client, bucket, "ck/.fsx-stage/manifests/") == ["ck/.fsx-stage/manifests/2.json"]
    # Generation 1's objects that generation 2 names are kept; its old f042 is gone.
    assert len(keys(s3_client, bucket, "ck/.fsx-stage/gen/1/")) == 99
    assert "ck/.fsx-stage/gen/1/f042" not in keys(s3_client, bucket, "ck/.fsx-stage/gen/1/")
    back = tmp_path / "back"
    restored = gens.restore(str(back), OPTIONS)
    assert restored.generation == 2 and restored.summary.ok
    assert files_of(back) == files_of(src)  # byte-identical, from two directories
    write(src, {"f007": b"again"})
    third = gens.publish(str(src), OPTIONS, keep=1)
    assert third.summary.objects_done == 1
    assert gens.newest_complete() is not None and files_of(src) == _restored(gens, tmp_path)


def test_a_file_rewritten_in_place_with_the_same_size_and_timestamps_is_uploaded_again(
    s3: S3Settings, bucket: str, tmp_path: Path
) -> None:
    """Coarse timestamps (Lustre's are seconds) can hide a rewrite: the checksum does not."""
    src = tmp_path / "ckpt"
    write(src, {"state": b"AAAA"})
    gens = Generations(f"s3://{bucket}/ck/", s3)
    gens.publish(str(src), OPTIONS)
    st = (src / "state").stat()
    (src / "state").write_bytes(b"BBBB")
    os.utime(src / "state", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert gens.publish(str(src), OPTIONS).summary.objects_done == 1
    assert _restored(gens, tmp_path) == {"state": b"BBBB"}


def _restored(gens: Generations, tmp_path: Path) -> dict[str, bytes]:
    back = tmp_path / f"restored-{len(list(tmp_path.iterdir()))}"
    assert gens.restore(str(back), OPTIONS).summary.ok
    return files_of(back)
