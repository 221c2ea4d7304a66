"""Per-job state: what the hooks planned, did, and still owe, per entry.

One JSON file per job, ``<state_dir>/jobs/<job_id>.json``, replaced atomically on every
change, owned by root and readable by the job's group (mode 0640, directory 0711 so job ids
cannot be listed). ``fsx-stage status JOBID`` renders it. A hook that crashed and runs again
finds it and resumes: entries already ``done`` in this run of the job are not redone.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from fsx_stage.clock import SYSTEM_CLOCK, Clock
from fsx_stage.direction import Direction
from fsx_stage.directives import Kind
from fsx_stage.filters import Filter
from fsx_stage.hooks.atomic import ensure_dir, locked, write_atomic
from fsx_stage.plan import StagePlan
from fsx_stage.plan_entry import Sides, with_direction
from fsx_stage.redaction import redact


class Phase(StrEnum):
    STAGE_IN = "stage_in"
    FLUSH = "flush"


class EntryStatus(StrEnum):
    WAITING = "waiting"  # not attempted yet
    RUNNING = "running"
    DONE = "done"
    SKIPPED = "skipped"  # nothing to do (optional source missing, when= not met, ...)
    FAILED = "failed"  # the user's error; retrying cannot help
    PENDING = "pending"  # S3 refused or was unreachable: kept on scratch, retried later


class HookStatus(StrEnum):
    NOT_RUN = "not_run"
    RUNNING = "running"
    DONE = "done"
    SKIPPED = "skipped"  # not the first node of the allocation
    FAILED_JOB = "failed_job"  # the job was failed for a user error (node kept in service)
    NODE_FAULT = "node_fault"  # the hook exited non-zero: Slurm drains the node


class EntryState(Sides, BaseModel):
    """One directive's transfer in one phase."""

    index: int
    phase: Phase
    kind: Kind
    direction: Direction
    source: str
    destination: str
    recursive: bool = False
    filters: tuple[Filter, ...] = ()
    optional: bool = False
    keep: int | None = None  # checkpoint generations kept (None: saved by an earlier version)
    every: int | None = None  # checkpoint: seconds between the agent's flushes while it runs
    status: EntryStatus = EntryStatus.WAITING
    bytes: int = 0
    objects: int = 0
    skipped_objects: int = 0
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    duration_s: float | None = None
    error: str | None = None
    error_category: str | None = None

    @model_validator(mode="before")
    @classmethod
    def legacy_direction(cls, data: Any) -> Any:
        return with_direction(data)

    def start(self) -> None:
        self.status = EntryStatus.RUNNING
        self.attempts += 1
        self.started_at = time.time()
        self.finished_at = None
        self.duration_s = None
        self.error = None
        self.error_category = None

    def finish(
        self, status: EntryStatus, error: str | None = None, category: str | None = None
    ) -> None:
        self.status = status
        self.finished_at = time.time()
        if self.started_at is not None:
            self.duration_s = round(self.finished_at - self.started_at, 3)
        self.error = redact(error) if error else error  # state files are shown to users
        self.error_category = category


MAX_GENERATION_RECORDS = 100  # a job's state keeps the newest records only


class GenerationRecord(BaseModel):
    """A checkpoint generation this job published (or restored), for ``fsx-stage status``."""

    index: int  # the checkpoint directive
    generation: int | None  # None: a flush that published nothing
    created_at: float | None = None  # when its manifest was written (or the flush failed)
    files: int = 0
    bytes: int = 0
    state: Literal["complete", "removed", "restored", "failed"] = "complete"
    by: str = ""  # prolog (restore), epilog, agent request, agent every=
    error: str | None = None


class HookRun(BaseModel):
    status: HookStatus = HookStatus.NOT_RUN
    host: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    message: str | None = None


class JobState(BaseModel):
    """Everything ``fsx-stage status`` shows for one job."""

    version: int = 1
    job_id: int
    user: str
    uid: int
    gid: int
    restart_count: int = 0
    array_job_id: int | None = None
    array_task_id: int | None = None
    # Who stages this job: the node's Prolog/Epilog ("hooks") or the controller's
    # burst buffer (stage-in while pending, flush after release; see docs/modes.md).
    mode: Literal["hooks", "burst_buffer"] = "hooks"
    directives: list[str] = Field(default_factory=list)
    plan: StagePlan | None = None  # None: not planned yet (or the directives were refused)
    failure_reason: str | None = None
    admin_comment: str | None = None  # what fsx-stage last set as the job's AdminComment
    job_succeeded: bool | None = None
    prolog: HookRun = Field(default_factory=HookRun)
    epilog: HookRun = Field(default_factory=HookRun)
    entries: list[EntryState] = Field(default_factory=list)
    generations: list[GenerationRecord] = Field(default_factory=list)
    updated_at: float = Field(default_factory=time.time)

    def note_generation(self, index: int, record: dict[str, Any], by: str) -> None:
        """Record what a checkpoint step reported (`GenerationResult.record`): the new
        generation, and the older ones its pruning removed."""
        removed = set(record.get("removed", ()))
        for known in self.generations:
            if known.index == index and known.generation in removed:
                known.state = "removed"
        self._add_generation(
            GenerationRecord(
                index=index,
                generation=int(record["generation"]),
                created_at=record.get("created_at"),
                files=int(record.get("files", 0)),
                bytes=int(record.get("bytes", 0)),
                state="restored" if record.get("restored") else "complete",
                by=by,
            )
        )

    def note_failed_flush(self, index: int, error: str, by: str) -> None:
        failed = GenerationRecord(
            index=index, generation=None, created_at=time.time(), state="failed", by=by
        )
        failed.error = redact(error)
        self._add_generation(failed)

    def _add_generation(self, record: GenerationRecord) -> None:
        self.generations = [*self.generations, record][-MAX_GENERATION_RECORDS:]

    def phase_entries(self, phase: Phase) -> list[EntryState]:
        return [e for e in self.entries if e.phase == phase]

    def replace_phase(self, phase: Phase, entries: list[EntryState]) -> None:
        self.entries = [e for e in self.entries if e.phase != phase] + entries


class StateStore:
    """The hooks' state directory: ``jobs/`` (job state) and ``pending/`` (flush queue)."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir
        self.jobs_dir = state_dir / "jobs"
        self.pending_dir = state_dir / "pending"
        self.locks_dir = state_dir / "locks"
        self.arrays_dir = state_dir / "arrays"

    def ensure(self) -> None:
        ensure_dir(self.root, 0o711)
        ensure_dir(self.jobs_dir, 0o711)
        ensure_dir(self.arrays_dir, 0o711)
        ensure_dir(self.pending_dir, 0o700)
        ensure_dir(self.locks_dir, 0o700)

    def path(self, job_id: int) -> Path:
        return self.jobs_dir / f"{int(job_id)}.json"

    @contextlib.contextmanager
    def lock(self, job_id: int, *, wait: bool = True) -> Iterator[None]:
        """Serialise the prolog, the epilog and ``flush --pending`` for one job."""
        with locked(self.locks_dir / f"{int(job_id)}.lock", wait=wait):
            yield

    def array_alias(self, array_job_id: int, array_task_id: int) -> Path:
        """``arrays/A_T``: the job id of task T of array job A (Slurm's ``A_T`` name)."""
        return self.arrays_dir / f"{int(array_job_id)}_{int(array_task_id)}"

    def array_task_job_id(self, array_job_id: int, array_task_id: int) -> int | None:
        """The job id recorded for array task ``A_T``, None when this store has none."""
        try:
            text = self.array_alias(array_job_id, array_task_id).read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None

    def load(self, job_id: int) -> JobState | None:
        try:
            data = self.path(job_id).read_bytes()
        except FileNotFoundError:
            return None
        try:
            return JobState.model_validate_json(data)
        except ValidationError as exc:
            raise StateError(f"state file {self.path(job_id)} is unreadable: {exc}") from exc

    def prune(self, older_than_s: float, keep: set[int], clock: Clock = SYSTEM_CLOCK) -> list[int]:
        """Remove the state (and lock) of jobs untouched for ``older_than_s`` seconds,
        except the ids in ``keep`` (jobs with a pending flush). Returns the removed ids."""
        limit = clock.now() - older_than_s
        removed = []
        for path in self.jobs_dir.glob("*.json"):
            if not path.stem.isdigit() or int(path.stem) in keep:
                continue
            try:
                if path.stat().st_mtime >= limit:
                    continue
                path.unlink()
            except FileNotFoundError:
                continue
            (self.locks_dir / f"{path.stem}.lock").unlink(missing_ok=True)
            removed.append(int(path.stem))
        gone = {str(job_id) for job_id in removed}
        for alias in self.arrays_dir.glob("*_*"):
            with contextlib.suppress(FileNotFoundError, UnicodeDecodeError):
                if alias.read_text().strip() in gone:
                    alias.unlink()
        return sorted(removed)

    def save(self, state: JobState) -> None:
        state.updated_at = time.time()
        data = json.dumps(state.model_dump(mode="json"), indent=1).encode("utf-8") + b"\n"
        group = state.gid if os.geteuid() == 0 else None
        write_atomic(self.path(state.job_id), data, mode=0o640, group=group)
        if state.array_job_id is not None and state.array_task_id is not None:
            alias = self.array_alias(state.array_job_id, state.array_task_id)
            if self.array_task_job_id(state.array_job_id, state.array_task_id) != state.job_id:
                # Only a job id: world-readable like `squeue`'s, the state itself stays 0640.
                write_atomic(alias, f"{state.job_id}\n".encode(), mode=0o644)


class StateError(Exception):
    """A state file exists but cannot be read."""
