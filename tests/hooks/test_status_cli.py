"""``fsx-stage status JOBID``: what the hooks did, per entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.testbed.clock import FakeClock

from fsx_stage.cli import main
from fsx_stage.cli.hooks import render_status
from fsx_stage.hooks.state import (
    EntryState,
    EntryStatus,
    HookRun,
    HookStatus,
    JobState,
    Phase,
    StateStore,
)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StateStore:
    config = tmp_path / "config.toml"
    config.write_text(f'scratch_roots = ["/fsx/{{user}}/"]\nstate_dir = "{tmp_path / "state"}"\n')
    monkeypatch.setenv("FSX_STAGE_CONFIG", str(config))
    s = StateStore(tmp_path / "state")
    s.ensure()
    entry = EntryState(
        index=2,
        phase=Phase.FLUSH,
        kind="checkpoint",
        source="/fsx/u/ckpt/",
        destination="s3://b/ckpt/",
        recursive=True,
    )
    entry.start()
    entry.bytes = 3 * 1024 * 1024
    entry.finish(
        EntryStatus.PENDING, "1 object failed: step-9: InternalError (HTTP 500)", "network"
    )
    s.save(
        JobState(
            job_id=42,
            user="u",
            uid=1001,
            gid=1001,
            job_succeeded=False,
            prolog=HookRun(status=HookStatus.DONE, host="n1"),
            epilog=HookRun(status=HookStatus.DONE, host="n1", message="1 entry pending"),
            entries=[entry],
        )
    )
    return s


def test_status_shows_each_entry(store: StateStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "42"]) == 3  # a flush still pending: not done yet
    out = capsys.readouterr().out
    assert "job 42  user u" in out
    assert "job result: did not succeed" in out
    assert "epilog: done on n1" in out and "1 entry pending" in out
    row = next(line for line in out.splitlines() if line.lstrip().startswith("2 "))
    assert row.split()[:4] == ["2", "flush", "checkpoint", "pending"]
    assert "3.0 MiB" in row
    assert "/fsx/u/ckpt/ -> s3://b/ckpt/" in out
    assert "error: 1 object failed: step-9: InternalError (HTTP 500)" in out


def test_a_running_entry_shows_what_it_moved_so_far_and_its_rate() -> None:
    entry = EntryState(
        index=1,
        phase=Phase.STAGE_IN,
        kind="in",
        source="s3://b/data/",
        destination="/fsx/u/data/",
        status=EntryStatus.RUNNING,
        bytes=40 * 1024 * 1024,
        objects=7,
        started_at=1000.0,
    )
    state = JobState(job_id=5, user="u", uid=1001, gid=1001, entries=[entry])
    text = render_status(state, FakeClock(1020.0))
    assert "so far: 7 objects, 40.0 MiB in 20 s (2.0 MiB/s)" in text


def test_status_json_is_the_state(store: StateStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "42", "--json"]) == 3
    data = json.loads(capsys.readouterr().out)
    assert JobState.model_validate(data) == store.load(42)


def test_unknown_job(store: StateStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "7"]) == 1
    assert "no staging state for job 7" in capsys.readouterr().err


def _array_task_state(store: StateStore, job_id: int, array_job_id: int, task: int) -> None:
    store.save(
        JobState(
            job_id=job_id,
            user="u",
            uid=1001,
            gid=1001,
            array_job_id=array_job_id,
            array_task_id=task,
            prolog=HookRun(status=HookStatus.DONE, host="n1"),
        )
    )


def test_status_of_an_array_task_by_its_slurm_name(
    store: StateStore, capsys: pytest.CaptureFixture[str]
) -> None:
    # Task 2 of array job 15 runs as job 152's neighbour 18; "15_2" is not job 152.
    _array_task_state(store, job_id=18, array_job_id=15, task=2)
    _array_task_state(store, job_id=152, array_job_id=150, task=2)
    assert main(["status", "15_2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("job 18 (array task 15_2)  user u")


def test_status_of_an_unknown_array_task_says_so(
    store: StateStore, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # No index entry and no Slurm to ask: not found (never job 152 by accident).
    monkeypatch.setenv("SLURM_CONF", "/nonexistent/slurm.conf")
    _array_task_state(store, job_id=152, array_job_id=150, task=2)
    assert main(["status", "15_2"]) == 1
    assert "no staging state for job 15_2" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["15__2", "_2", "15_", "1_5_2", "x", "-3", "15 2"])
def test_status_rejects_what_is_not_a_job_id(
    store: StateStore, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["status", text])
    assert exited.value.code == 2
    assert "expected JOBID (e.g. 152) or ARRAYJOBID_TASKID (e.g. 15_2)" in capsys.readouterr().err


def test_pruned_array_task_leaves_no_alias(store: StateStore) -> None:
    _array_task_state(store, job_id=18, array_job_id=15, task=2)
    assert store.array_task_job_id(15, 2) == 18
    assert 18 in store.prune(0.0, keep=set(), clock=FakeClock(10.0**12))
    assert store.array_task_job_id(15, 2) is None


def _save(store: StateStore, **fields: object) -> None:
    state = store.load(42)
    assert state is not None
    store.save(state.model_copy(update=fields))


def _entry(status: EntryStatus, error: str | None) -> EntryState:
    entry = EntryState(
        index=1, phase=Phase.FLUSH, kind="out", source="/fsx/u/r/", destination="s3://b/r/"
    )
    entry.finish(status, error)
    return entry


def test_a_failed_flush_fails_status(store: StateStore, capsys: pytest.CaptureFixture[str]) -> None:
    _save(store, entries=[_entry(EntryStatus.FAILED, "/fsx/u/r/: no such file or directory")])
    assert main(["status", "42"]) == 1
    assert "error: /fsx/u/r/: no such file or directory" in capsys.readouterr().out


def test_everything_done_or_skipped_is_success_and_skips_are_no_errors(
    store: StateStore, capsys: pytest.CaptureFixture[str]
) -> None:
    skipped = _entry(EntryStatus.SKIPPED, "when=success and the job failed")
    _save(store, entries=[skipped])
    assert main(["status", "42"]) == 0
    out = capsys.readouterr().out
    assert "skipped: when=success and the job failed" in out
    assert "error:" not in out


def test_status_speaks_in_user_words(store: StateStore, capsys: pytest.CaptureFixture[str]) -> None:
    _save(
        store,
        entries=[],
        prolog=HookRun(status=HookStatus.FAILED_JOB, host="n1"),
        epilog=HookRun(),
        failure_reason="fsx-stage: job 42 not started: directive 1: ...",
    )
    assert main(["status", "42"]) == 1  # refused before any transfer
    out = capsys.readouterr().out
    assert "prolog: stopped the job on n1" in out and "epilog: not run yet" in out
    assert "failed_job" not in out and "not_run" not in out


def test_status_lists_each_checkpoint_generation(
    store: StateStore, capsys: pytest.CaptureFixture[str]
) -> None:
    state = store.load(42)
    assert state is not None
    first = {"generation": 1, "created_at": 1.7e9, "files": 3, "bytes": 2048, "removed": []}
    state.note_generation(2, first, by="agent every=")
    state.note_generation(2, {**first, "generation": 2, "removed": []}, by="agent request")
    state.note_failed_flush(2, "InternalError (HTTP 500)", by="agent every=")
    state.note_generation(2, {**first, "generation": 3, "removed": [1]}, by="epilog")
    store.save(state)
    main(["status", "42"])
    out = capsys.readouterr().out
    table = out.split("checkpoint generations:\n")[1].splitlines()
    assert table[0].split() == ["#", "GEN", "TIME", "FILES", "BYTES", "STATE", "BY"]
    rows = [line.split() for line in table[1:] if not line.startswith("    ")]
    assert [(r[1], r[3], r[6], r[-1]) for r in rows] == [
        ("1", "3", "removed", "every="),
        ("2", "3", "complete", "request"),
        ("-", "0", "failed", "every="),
        ("3", "3", "complete", "epilog"),
    ]
    assert "2.0 KiB" in table[1]
    assert "    error: InternalError (HTTP 500)" in table
