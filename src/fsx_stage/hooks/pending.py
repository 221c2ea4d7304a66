"""The durable queue of flushes that S3 did not accept yet.

When the epilog cannot flush an entry (S3 unreachable, throttling, refusal, time budget
spent), the data stays on scratch untouched and the job gets a record here,
``<state_dir>/pending/<job_id>.json``, written atomically before the epilog returns. The
record is self-contained (who the user is, what goes where, what to do with scratch
afterwards) so ``fsx-stage flush --pending`` can retry it long after the job is gone. It is
removed only once every entry in it is verified in S3.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from fsx_stage.hooks.atomic import remove_durably, write_atomic
from fsx_stage.hooks.state import EntryState, StateStore


class PendingFlush(BaseModel):
    job_id: int
    user: str
    uid: int
    gid: int
    groups: tuple[int, ...] = ()
    entries: list[EntryState]
    remove_scratch: bool = False
    cleanup: list[str] = Field(default_factory=list)  # scratch paths to remove once flushed
    created_at: float = Field(default_factory=time.time)
    attempts: int = 0
    last_attempt_at: float | None = None
    last_error: str | None = None


class PendingStore:
    """``pending/<job_id>.json`` files in the state directory (root only, mode 0600)."""

    def __init__(self, store: StateStore) -> None:
        self.dir = store.pending_dir

    def path(self, job_id: int) -> Path:
        return self.dir / f"{int(job_id)}.json"

    def save(self, record: PendingFlush) -> None:
        data = json.dumps(record.model_dump(mode="json"), indent=1).encode("utf-8") + b"\n"
        write_atomic(self.path(record.job_id), data, mode=0o600)

    def load(self, job_id: int) -> PendingFlush | None:
        try:
            return PendingFlush.model_validate_json(self.path(job_id).read_bytes())
        except FileNotFoundError:
            return None

    def remove(self, job_id: int) -> None:
        remove_durably(self.path(job_id))

    def job_ids(self) -> list[int]:
        """Job ids with a pending flush, oldest job first."""
        ids = []
        for path in self.dir.glob("*.json"):
            if path.stem.isdigit():
                ids.append(int(path.stem))
        return sorted(ids)

    def load_all(self) -> tuple[list[PendingFlush], list[tuple[Path, str]]]:
        """All records, plus the unreadable ones (path, why) so they are reported, not lost."""
        records: list[PendingFlush] = []
        broken: list[tuple[Path, str]] = []
        for job_id in self.job_ids():
            try:
                record = self.load(job_id)
            except (ValidationError, ValueError) as exc:
                broken.append((self.path(job_id), str(exc)))
                continue
            if record is not None:
                records.append(record)
        return records, broken
