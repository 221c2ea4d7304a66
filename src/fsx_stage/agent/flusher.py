"""One on-request or periodic flush of a running job's checkpoints, as its user.

Reuses the hooks' pieces: credentials resolved as root, the privilege-dropped worker
(`run_entry`), the per-job lock the Prolog, the Epilog and ``flush --pending`` take.
"""

from __future__ import annotations

import time

from fsx_stage.directives import Kind
from fsx_stage.hooks.atomic import LockBusy
from fsx_stage.hooks.outcome import HookFault
from fsx_stage.hooks.planning import entry_state
from fsx_stage.hooks.privileges import UserCredentials
from fsx_stage.hooks.runtime import (
    Runtime,
    encryption,
    resolve_credentials,
    s3_settings,
    transfer_options,
)
from fsx_stage.hooks.staging import run_entry
from fsx_stage.hooks.state import EntryStatus, HookStatus, JobState, Phase
from fsx_stage.plan import PlanEntry

LOCK_POLL_S = 0.2


class Refused(Exception):
    """The request cannot be served (not this job's, not running here, nothing to flush)."""


def running_state(rt: Runtime, job_id: int) -> JobState:
    """The state of a job whose Prolog finished here and whose Epilog has not started."""
    state = rt.store.load(job_id)
    if state is None or state.plan is None:
        raise Refused(f"job {job_id} has no fsx-stage state on this node")
    if state.prolog.status is not HookStatus.DONE or state.epilog.status is not HookStatus.NOT_RUN:
        raise Refused(f"job {job_id} is not running (its Prolog is not done or its Epilog began)")
    return state


def checkpoint_entries(state: JobState, indexes: list[int] | None = None) -> list[PlanEntry]:
    """The job's checkpoint entries (those of ``indexes`` only, when given; none when
    the job was not planned)."""
    if state.plan is None:
        return []
    return [
        e
        for e in state.plan.entries
        if e.kind is Kind.CHECKPOINT and (indexes is None or e.index in indexes)
    ]


def flush_job(
    rt: Runtime,
    job_id: int,
    deadline: float,
    indexes: list[int] | None = None,
    by: str = "agent",
) -> None:
    """Publish a generation of every checkpoint of ``job_id`` (of ``indexes`` only, when
    given); raises Refused or RuntimeError (with the reason) when not every one was."""
    while True:
        try:
            with rt.store.lock(job_id, wait=False):
                _flush_locked(rt, job_id, deadline, indexes, by)
                return
        except LockBusy:
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id}: its hooks hold the job's lock") from None
            time.sleep(LOCK_POLL_S)


def _flush_locked(
    rt: Runtime, job_id: int, deadline: float, indexes: list[int] | None, by: str
) -> None:
    state = running_state(rt, job_id)  # read again under the lock
    entries = checkpoint_entries(state, indexes)
    if not entries:
        raise Refused(f"job {job_id} has no checkpoint directive")
    creds = UserCredentials.lookup(state.user, state.uid, state.gid)
    try:
        s3 = s3_settings(rt.config, resolve_credentials(rt.config))
    except HookFault as fault:
        raise RuntimeError(fault.message) from None
    enc = encryption(rt.config)
    errors = []
    for plan_entry in entries:
        entry = entry_state(plan_entry, Phase.FLUSH)
        options = transfer_options(rt.config, enc, filters=entry.filters)
        result = run_entry(creds, entry, options, s3, deadline - time.monotonic())
        if result.generation is not None:
            state.note_generation(entry.index, result.generation, by=by)
            rt.store.save(state)
        rt.log.info(
            "agent.flush",
            job=job_id,
            index=entry.index,
            destination=entry.destination,
            status=result.status.value,
            bytes=result.bytes,
            error=result.error,
        )
        if result.status is not EntryStatus.DONE:
            errors.append(f"directive {entry.index}: {result.error}")
            state.note_failed_flush(entry.index, result.error or result.status.value, by=by)
            rt.store.save(state)
    if errors:
        raise RuntimeError("; ".join(errors))
