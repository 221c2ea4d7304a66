"""``fsx-stage flush --pending``: retry the flushes S3 did not accept at the job's end.

Run by an admin, cron or the systemd timer (``slurm-conf-examples/fsx-stage-flush.*``).
Each pending record is retried as its job's user, with sync (only what is not in S3 yet
moves), within the flush time budget. A record is removed only when every entry in it is
verified in S3; then, if the site removes scratch after a flush, its paths are removed.
A job whose epilog (or another flush) is running right now is skipped, not waited for.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from fsx_stage.hooks.atomic import LockBusy
from fsx_stage.hooks.hook import EntrySteps, prepare_transfers
from fsx_stage.hooks.logging import EventLog, emergency_log
from fsx_stage.hooks.outcome import HookFault
from fsx_stage.hooks.pending import PendingFlush
from fsx_stage.hooks.privileges import UserCredentials
from fsx_stage.hooks.runtime import Runtime, check_scratch, start
from fsx_stage.hooks.staging import remove_as_user
from fsx_stage.hooks.state import EntryState, EntryStatus, Phase

#: A flush uploads: it creates nothing on scratch (the transfer worker's default umask).
FLUSH_UMASK = 0o077


def record_creds(record: PendingFlush) -> UserCredentials:
    return UserCredentials.lookup(record.user, record.uid, record.gid, record.groups)


def _update_job_state(
    rt: Runtime,
    job_id: int,
    entries: list[EntryState],
    generations: list[tuple[int, dict[str, Any]]],
) -> None:
    """The retried entries, and the checkpoint generations they published (``status``)."""
    state = rt.store.load(job_id)
    if state is None:
        return
    by_index = {(e.index, e.source): e for e in entries}
    for pos, entry in enumerate(state.entries):
        if entry.phase is Phase.FLUSH and (entry.index, entry.source) in by_index:
            state.entries[pos] = by_index[(entry.index, entry.source)]
    for index, generation in generations:
        state.note_generation(index, generation, by="flush --pending")
    rt.store.save(state)


def retry(
    rt: Runtime,
    record: PendingFlush,
    creds: UserCredentials | None = None,
    budget_s: float | None = None,
) -> PendingFlush | None:
    """Retry ``record`` (caller holds the job's lock); None once everything is in S3.

    ``budget_s`` defaults to the site's flush budget.
    """
    log = EventLog(record.job_id)
    config = rt.config
    todo = [e for e in record.entries if e.status is not EntryStatus.DONE]
    setup = prepare_transfers(
        config, creds or record_creds(record), umask_for=lambda _path: FLUSH_UMASK
    )
    deadline = time.monotonic() + (config.timeouts.flush if budget_s is None else budget_s)
    record.attempts += 1
    record.last_attempt_at = time.time()
    try:
        # As in the Epilog: on a node without the scratch tree every source would look
        # deleted, and a deleted source is final: the record would be dropped, unflushed.
        check_scratch(config, [e.source for e in todo], need_space=False)
    except HookFault as exc:
        record.last_error = f"{exc.message}: run flush --pending on a node that mounts it"
        rt.pending.save(record)
        log.warning("flush_pending.scratch_unavailable", error=record.last_error)
        return record
    generations: list[tuple[int, dict[str, Any]]] = []
    steps = EntrySteps(
        config=config,
        setup=setup,
        log=log,
        # The record on disk keeps saying "pending" until the end: a retry killed midway
        # leaves it as it was.
        save=lambda: None,
        note_generation=lambda index, generation: generations.append((index, generation)),
    )
    for entry in todo:
        steps.flush(entry, deadline, event="flush_pending.entry")
    errors = [
        f"directive {e.index}: {e.error}"
        for e in record.entries
        if e.status is EntryStatus.PENDING and e.error
    ]
    record.last_error = "; ".join(errors) or None
    _update_job_state(rt, record.job_id, record.entries, generations)
    if any(e.status is EntryStatus.PENDING for e in record.entries):
        rt.pending.save(record)
        log.warning(
            "flush_pending.still_pending", attempts=record.attempts, error=record.last_error
        )
        return record
    if record.remove_scratch and record.cleanup:
        problems = remove_as_user(setup.user, record.cleanup)
        log.info("scratch.removed", paths=record.cleanup, problems=problems)
    rt.pending.remove(record.job_id)
    log.info("flush_pending.done", attempts=record.attempts)
    return None


def run(
    env: Mapping[str, str], job_ids: list[int] | None = None, keep_days: float | None = None
) -> int:
    """Retry every pending flush (or those of ``job_ids``); 0 when none is left pending.

    ``keep_days``: also remove the state of jobs untouched for that long (never of a job
    with a pending flush), so the state directory does not grow without bound.
    """
    try:
        rt = start(env, None)
    except HookFault as fault:
        emergency_log(None).error("flush_pending.cannot_start", error=fault.message)
        print(f"fsx-stage flush: {fault.message}")
        return 1
    records, broken = rt.pending.load_all()
    for path, why in broken:
        rt.log.error("flush_pending.unreadable_record", path=str(path), error=why)
        print(f"fsx-stage flush: unreadable pending record {path}: {why}")
    left = len(broken)
    if keep_days is not None:
        keep = set(rt.pending.job_ids())
        pruned = rt.store.prune(keep_days * 86400, keep)
        if pruned:
            rt.log.info("state.pruned", jobs=len(pruned), older_than_days=keep_days)
    for record in records:
        if job_ids and record.job_id not in job_ids:
            continue
        try:
            with rt.store.lock(record.job_id, wait=False):
                current = rt.pending.load(record.job_id)  # the epilog may have changed it
                if current is None:
                    continue
                remaining = retry(rt, current)
        except LockBusy:
            print(f"job {record.job_id}: busy (its epilog or another flush runs), skipped")
            left += 1
            continue
        except HookFault as fault:
            rt.log.error("flush_pending.failed", job=record.job_id, error=fault.message)
            print(f"job {record.job_id}: {fault.message}")
            left += 1
            continue
        if remaining is None:
            print(f"job {record.job_id}: flushed")
        else:
            left += 1
            print(f"job {record.job_id}: still pending: {remaining.last_error}")
    return 0 if left == 0 else 1
