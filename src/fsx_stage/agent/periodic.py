"""Periodic checkpoint flushes (``every=``): which jobs the node's agent flushes, and when.

The Prolog registers a job whose plan has an ``every=`` checkpoint once its stage-in is
done (``<state_dir>/agent/periodic/<job>.json``, atomic, under the job's lock), naming
the host it ran on; in the burst buffer mode the node's Prolog does so (the stage-in ran
on the staging host, the job runs here). The agent of that host flushes each such entry
``every`` seconds after the job started or its last generation, as long as the job runs
here. It drops a registration whose job's Epilog (or ``data_out``) began, whose state is
gone, or whose job has no process on this node any more (killed with its slurmd); the
final flush stays the Epilog's.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from fsx_stage.clock import SYSTEM_CLOCK, Clock
from fsx_stage.hooks.atomic import ensure_dir, remove_durably, write_atomic
from fsx_stage.hooks.state import HookStatus, JobState, StateStore


class Registration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: int
    host: str
    restart_count: int
    registered_at: float


def this_host() -> str:
    return socket.gethostname()


def periodic_dir(store: StateStore) -> Path:
    return store.root / "agent" / "periodic"


def every_entries(state: JobState) -> dict[int, int]:
    """Directive index -> seconds between flushes, for the job's ``every=`` checkpoints."""
    if state.plan is None:
        return {}
    return {e.index: e.every for e in state.plan.entries if e.every is not None}


def register(store: StateStore, state: JobState) -> bool:
    """Register ``state``'s job with this host's agent when it has ``every=`` entries
    (caller holds the job's lock). True when registered."""
    if not every_entries(state):
        return False
    record = Registration(
        job_id=state.job_id,
        host=this_host(),
        restart_count=state.restart_count,
        registered_at=time.time(),
    )
    directory = ensure_dir(periodic_dir(store), 0o700)
    write_atomic(directory / f"{state.job_id}.json", record.model_dump_json().encode())
    return True


def registrations(store: StateStore, host: str) -> list[Registration]:
    """The registrations of ``host``'s jobs (unreadable files are skipped)."""
    found = (_read(path) for path in sorted(periodic_dir(store).glob("*.json")))
    return [r for r in found if r is not None and r.host == host]


def registration(store: StateStore, job_id: int) -> Registration | None:
    return _read(periodic_dir(store) / f"{int(job_id)}.json")


def _read(path: Path) -> Registration | None:
    try:
        return Registration.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return None


def unregister(store: StateStore, job_id: int) -> None:
    remove_durably(periodic_dir(store) / f"{int(job_id)}.json")


def is_over(record: Registration, state: JobState | None) -> bool:
    """The registered run of the job has ended (its Epilog began) or left no state. A
    state of an earlier run (the requeued job's Prolog is about to start) is not over."""
    if state is None:
        return True
    if state.restart_count > record.restart_count:
        return True  # a later run: its own Prolog registers it again
    if state.restart_count < record.restart_count:
        return False
    return state.epilog.status is not HookStatus.NOT_RUN


def due_entries(
    state: JobState, last_attempt: dict[int, float], clock: Clock = SYSTEM_CLOCK
) -> list[int]:
    """The ``every=`` entries whose next flush is due: ``every`` seconds after the latest
    of the stage-in's end, the entry's newest generation of this run, and the agent's
    last attempt (a failed flush is retried at the next period, not at once)."""
    now = clock.now()
    start = state.prolog.finished_at or state.prolog.started_at or now
    due = []
    for index, every in every_entries(state).items():
        published = [
            g.created_at
            for g in state.generations
            if g.index == index and g.created_at is not None and g.state != "restored"
        ]
        base = max([start, last_attempt.get(index, 0.0), *published])
        if now >= base + every:
            due.append(index)
    return due
