"""Job state and the pending queue: atomic, durable, root-owned, readable by the job's group."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fsx_stage.direction import Direction
from fsx_stage.directives import Kind
from fsx_stage.hooks import atomic
from fsx_stage.hooks.atomic import LockBusy, write_atomic
from fsx_stage.hooks.pending import PendingFlush, PendingStore
from fsx_stage.hooks.state import (
    EntryState,
    EntryStatus,
    HookStatus,
    JobState,
    Phase,
    StateError,
    StateStore,
)
from fsx_stage.redaction import register_secret


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    s = StateStore(tmp_path / "state")
    s.ensure()
    return s


def _entry(index: int = 1, status: EntryStatus = EntryStatus.WAITING) -> EntryState:
    return EntryState(
        index=index,
        phase=Phase.FLUSH,
        kind="out",
        source="/fsx/u/out/",
        destination="s3://b/out/",
        recursive=True,
        status=status,
    )


def _state(job_id: int = 42) -> JobState:
    return JobState(job_id=job_id, user="u", uid=1001, gid=1001, entries=[_entry()])


def test_state_round_trips(store: StateStore) -> None:
    state = _state()
    state.prolog.status = HookStatus.DONE
    store.save(state)
    loaded = store.load(42)
    assert loaded is not None
    assert loaded.prolog.status is HookStatus.DONE
    assert loaded.entries == state.entries


def test_no_state_is_none(store: StateStore) -> None:
    assert store.load(7) is None


def test_directories_and_file_modes(store: StateStore) -> None:
    store.save(_state())
    assert stat.S_IMODE(store.jobs_dir.stat().st_mode) == 0o711  # ids cannot be listed
    assert stat.S_IMODE(store.pending_dir.stat().st_mode) == 0o700
    info = store.path(42).stat()
    assert stat.S_IMODE(info.st_mode) == 0o640
    if os.geteuid() == 0:
        assert (info.st_uid, info.st_gid) == (0, 1001)  # the job's group may read it


def test_a_failed_write_leaves_the_old_state_and_no_temp_file(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.save(_state())
    before = store.path(42).read_bytes()

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", broken_fsync)
    changed = _state()
    changed.failure_reason = "new"
    with pytest.raises(OSError):
        store.save(changed)
    assert store.path(42).read_bytes() == before
    assert sorted(p.name for p in store.jobs_dir.iterdir()) == ["42.json"]


def test_write_atomic_replaces_whole(tmp_path: Path) -> None:
    target = tmp_path / "f"
    write_atomic(target, b"one")
    write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_write_atomic_does_not_follow_a_planted_temp_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    write_atomic(tmp_path / "f", b"data")
    assert victim.read_text() == "keep"


def test_corrupt_state_is_reported(store: StateStore) -> None:
    store.path(9).write_text("{not json")
    with pytest.raises(StateError, match="unreadable"):
        store.load(9)


def test_lock_is_exclusive(store: StateStore) -> None:
    with store.lock(42), pytest.raises(LockBusy), store.lock(42, wait=False):
        pass
    with store.lock(42, wait=False):  # free again
        pass


def test_entry_timing(store: StateStore) -> None:
    entry = _entry()
    entry.start()
    assert entry.status is EntryStatus.RUNNING and entry.attempts == 1
    entry.finish(EntryStatus.PENDING, "S3 unreachable", "network")
    assert entry.duration_s is not None and entry.duration_s >= 0
    assert (entry.error, entry.error_category) == ("S3 unreachable", "network")
    entry.start()
    assert entry.attempts == 2 and entry.error is None


# -- pending queue -------------------------------------------------------------------


def _pending(job_id: int) -> PendingFlush:
    return PendingFlush(
        job_id=job_id,
        user="u",
        uid=1001,
        gid=1001,
        entries=[_entry(status=EntryStatus.PENDING)],
        cleanup=["/fsx/u/out/"],
    )


def test_pending_records_round_trip_in_job_order(store: StateStore) -> None:
    queue = PendingStore(store)
    for job_id in (30, 4, 12):
        queue.save(_pending(job_id))
    assert queue.job_ids() == [4, 12, 30]
    record = queue.load(12)
    assert record is not None and record.entries[0].status is EntryStatus.PENDING
    assert stat.S_IMODE(queue.path(12).stat().st_mode) == 0o600
    queue.remove(12)
    assert queue.job_ids() == [4, 30]
    assert queue.load(12) is None


def test_an_unreadable_pending_record_is_reported_not_dropped(store: StateStore) -> None:
    queue = PendingStore(store)
    queue.save(_pending(1))
    queue.path(2).write_text("garbage")
    records, broken = queue.load_all()
    assert [r.job_id for r in records] == [1]
    assert [p.name for p, _ in broken] == ["2.json"]
    assert queue.path(2).exists()


def test_errors_in_the_state_carry_no_secret() -> None:
    register_secret("Sup3rSecretKeyMaterial/xyz")
    entry = _entry()
    entry.start()
    entry.finish(EntryStatus.PENDING, "signing with Sup3rSecretKeyMaterial/xyz failed", "other")
    assert entry.error == "signing with *** failed"


def test_old_state_is_pruned_unless_a_flush_is_pending(store: StateStore) -> None:
    for job_id in (1, 2, 3):
        store.save(_state(job_id))
        with store.lock(job_id):
            pass
    old = store.path(1).stat().st_mtime - 40 * 86400
    for job_id in (1, 2):
        os.utime(store.path(job_id), (old, old))
    assert store.prune(30 * 86400, keep={2}) == [1]
    assert store.load(1) is None and not (store.locks_dir / "1.lock").exists()
    assert store.load(2) is not None  # pending flush: kept however old
    assert store.load(3) is not None  # recent


# Written by fsx-stage before plan entries carried their direction (main at 1ee7f4d).
_BEFORE_DIRECTIONS = Path(__file__).parent / "data"


def test_a_state_file_written_before_directions_still_loads(store: StateStore) -> None:
    data = (_BEFORE_DIRECTIONS / "state-before-directions.json").read_bytes()
    store.path(4242).write_bytes(data)
    state = store.load(4242)
    assert state is not None and state.plan is not None
    assert [(e.kind, e.direction) for e in state.plan.entries] == [
        (Kind.IN, Direction.DOWNLOAD),
        (Kind.CHECKPOINT, Direction.UPLOAD),
        (Kind.OUT, Direction.UPLOAD),
    ]
    restore = state.plan.stage_in_entries()[1]  # the checkpoint, restored from S3
    assert (restore.direction, restore.s3_side) == (Direction.DOWNLOAD, "s3://bkt/ckpt/4242/")
    assert [(e.phase, e.kind, e.direction) for e in state.entries] == [
        (Phase.STAGE_IN, "in", Direction.DOWNLOAD),
        (Phase.STAGE_IN, "checkpoint", Direction.DOWNLOAD),
        (Phase.FLUSH, "checkpoint", Direction.UPLOAD),
        (Phase.FLUSH, "out", Direction.UPLOAD),
    ]
    assert [e.scratch_side for e in state.entries] == [
        "/fsx/alice/in/",
        "/fsx/alice/ckpt/",
        "/fsx/alice/ckpt/",
        "/fsx/alice/out/",
    ]
    store.save(state)  # and is written back with the directions
    again = store.load(4242)
    assert again is not None and again.model_dump() == state.model_dump()


def test_a_pending_record_written_before_directions_still_loads(store: StateStore) -> None:
    pending = PendingStore(store)
    data = (_BEFORE_DIRECTIONS / "pending-before-directions.json").read_bytes()
    pending.path(4242).write_bytes(data)
    record = pending.load(4242)
    assert record is not None
    assert [(e.direction, e.s3_side) for e in record.entries] == [
        (Direction.UPLOAD, "s3://bkt/ckpt/4242/"),
        (Direction.UPLOAD, "s3://bkt/out/4242/"),
    ]
