"""``fsx-stage status JOBID``: what the hooks did, per entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fsx_stage.cli import main
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
    assert main(["status", "42"]) == 0
    out = capsys.readouterr().out
    assert "job 42  user u" in out
    assert "job result: did not succeed" in out
    assert "epilog: done on n1" in out and "1 entry pending" in out
    row = next(line for line in out.splitlines() if line.lstrip().startswith("2 "))
    assert row.split()[:4] == ["2", "flush", "checkpoint", "pending"]
    assert "3.0 MiB" in row
    assert "/fsx/u/ckpt/ -> s3://b/ckpt/" in out
    assert "error: 1 object failed: step-9: InternalError (HTTP 500)" in out


def test_status_json_is_the_state(store: StateStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "42", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert JobState.model_validate(data) == store.load(42)


def test_unknown_job(store: StateStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "7"]) == 1
    assert "no staging state for job 7" in capsys.readouterr().err
