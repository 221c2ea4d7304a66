"""What the Prolog, the Epilog and ``flush --pending`` share: the job's context from Slurm,
its fresh state, the `Hook` frame (first node only, the job's lock) and `EntrySteps` (one
entry's transfer as the job user with live counts for ``status``, its end saved and logged).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from fsx_stage.config import SiteConfig
from fsx_stage.hooks import jobinfo
from fsx_stage.hooks.jobinfo import HookContext, JobInfoError
from fsx_stage.hooks.logging import EventLog
from fsx_stage.hooks.privileges import UserCredentials
from fsx_stage.hooks.runtime import (
    EXIT_OK,
    Runtime,
    TransferSetup,
    check_scratch,
    encryption,
    resolve_credentials,
    s3_settings,
    transfer_options,
)
from fsx_stage.hooks.slurmcontrol import SLURM, SlurmControl
from fsx_stage.hooks.staging import SOURCE_MISSING, EntryResult, run_entry
from fsx_stage.hooks.state import EntryState, EntryStatus, JobState
from fsx_stage.policy import Policy


def context(
    env: Mapping[str, str], log: EventLog | None = None, slurm: SlurmControl = SLURM
) -> HookContext:
    """The job's context: environment first, one ``scontrol show job`` for the rest."""
    job_id = int(env.get("SLURM_JOB_ID", "0") or 0)
    line = None
    try:
        line = slurm.show_job(job_id, env)
    except JobInfoError as exc:
        if log is not None:
            log.warning("scontrol.unavailable", error=str(exc))
    base = jobinfo.hook_context(env, scontrol_line=line)
    creds = UserCredentials.lookup(base.identity.user, base.identity.uid, base.identity.gid)
    return jobinfo.hook_context(env, scontrol_line=line, groups=creds.groups)


def user_credentials(ctx: HookContext) -> UserCredentials:
    ident = ctx.identity
    return UserCredentials.lookup(ident.user, ident.uid, ident.gid, ident.groups)


def fresh_state(ctx: HookContext, directives: list[str]) -> JobState:
    ident = ctx.identity
    return JobState(
        job_id=ident.job_id,
        user=ident.user,
        uid=ident.uid,
        gid=ident.gid,
        restart_count=ctx.restart_count,
        array_job_id=ident.array_job_id if ident.is_array_task else None,
        array_task_id=ident.array_task_id,
        directives=directives,
    )


def is_same_run(state: JobState, ctx: HookContext) -> bool:
    """The saved state belongs to this run of the job, not to a run before a requeue
    (Slurm counts restarts: a requeued or released job runs with a higher count)."""
    return state.restart_count == ctx.restart_count


#: How often a running entry's live counts are saved for `fsx-stage status`.
SAVE_LIVE_EVERY_S = 2.0


class Hook:
    """What the Prolog and Epilog share: once per job, on the first node, under the job lock."""

    name = "hook"
    mode: Literal["hooks", "burst_buffer"] = "hooks"  # the JobState.mode this hook writes

    def __init__(self, rt: Runtime, env: Mapping[str, str], slurm: SlurmControl = SLURM) -> None:
        self.rt = rt
        self.env = env
        self.slurm = slurm
        self.log = rt.log
        self.started = time.monotonic()

    def run(self) -> int:
        ctx = context(self.env, self.log, self.slurm)
        if not jobinfo.is_first_node(ctx, self.env):
            self.log.info(f"{self.name}.skip", reason="not the first node", node=ctx.node_name)
            return EXIT_OK
        # A job the burst buffer stages: its data_out may hold the job's lock for the whole
        # flush, and waiting for it would keep the node COMPLETING (the state file is
        # replaced atomically: reading it without the lock is safe).
        state = self.rt.store.load(ctx.job_id)
        if state is not None and state.mode != self.mode:
            self.log.info(f"{self.name}.skip", reason=f"the job is staged by the {state.mode} mode")
            self._staged_elsewhere(ctx, state)
            return EXIT_OK
        with self.rt.store.lock(ctx.job_id):
            return self._run_locked(ctx)

    def _run_locked(self, ctx: HookContext) -> int:
        raise NotImplementedError

    def _staged_elsewhere(self, ctx: HookContext, state: JobState) -> None:
        """What this node's hook still does for a job another mode stages (nothing)."""

    def _prepare_transfers(
        self, ctx: HookContext, scratch_paths: list[str], *, need_space: bool
    ) -> TransferSetup:
        """Scratch usable first (a node `HookFault`, or `Fault.SCRATCH_FULL`), then the rest
        (`prepare_transfers`)."""
        config = self.rt.config
        check_scratch(config, scratch_paths, need_space=need_space)
        policy = Policy(config)
        return prepare_transfers(
            config,
            user_credentials(ctx),
            umask_for=lambda path: policy.umask_for(path, ctx.identity),
        )

    def _steps(self, state: JobState, setup: TransferSetup) -> EntrySteps:
        """Entry steps that save ``state`` as they go and note its generations."""
        return EntrySteps(
            config=self.rt.config,
            setup=setup,
            log=self.log,
            save=lambda: self.rt.store.save(state),
            note_generation=lambda index, gen: state.note_generation(index, gen, by=self.name),
        )


def prepare_transfers(
    config: SiteConfig, user: UserCredentials, *, umask_for: Callable[[str], int]
) -> TransferSetup:
    """The node's S3 credentials and SSE-C key (each a node `HookFault` when missing),
    with the job user's credentials for the transfer worker."""
    credentials = resolve_credentials(config)
    return TransferSetup(
        user=user,
        s3=s3_settings(config, credentials),
        encryption=encryption(config),
        umask_for=umask_for,
    )


@dataclass(frozen=True)
class EntrySteps:
    """One entry at a time, as the job user: its transfer, then its end saved and logged.

    The Prolog, the Epilog and ``flush --pending`` run their entries through these steps;
    ``save`` persists whatever record holds the entries, ``note_generation`` gets the
    checkpoint generations a step published or restored.
    """

    config: SiteConfig
    setup: TransferSetup
    log: EventLog
    save: Callable[[], None]
    note_generation: Callable[[int, dict[str, Any]], None]

    def transfer(self, entry: EntryState, deadline: float) -> EntryResult:
        """Run one entry's transfer until ``deadline``; the entry keeps this attempt's
        counts, its end is the caller's to judge (`finish`)."""
        entry.start()
        self.save()
        options = transfer_options(self.config, self.setup.encryption, filters=entry.filters)
        saved = time.monotonic()

        def live(counts: dict[str, int]) -> None:
            # What `status` shows while the entry runs; the file is rewritten (fsync)
            # at most every SAVE_LIVE_EVERY_S seconds, whatever the object count.
            nonlocal saved
            entry.bytes, entry.objects = counts.get("bytes", 0), counts.get("objects", 0)
            if time.monotonic() - saved >= SAVE_LIVE_EVERY_S:
                saved = time.monotonic()
                self.save()

        setup = self.setup
        umask = setup.umask_for(entry.destination)
        budget = deadline - time.monotonic()
        result = run_entry(
            setup.user, entry, options, setup.s3, budget, umask=umask, on_progress=live
        )
        entry.bytes, entry.objects = result.bytes, result.objects
        entry.skipped_objects = result.skipped
        if result.generation is not None:
            self.note_generation(entry.index, result.generation)
        return result

    def finish(
        self,
        entry: EntryState,
        status: EntryStatus,
        result: EntryResult,
        event: str,
        *,
        ok: bool,
    ) -> None:
        """Save the entry's end, then log ``event`` (a warning unless ``ok``)."""
        entry.finish(status, result.error, result.category)
        self.save()
        self.log.event(
            event,
            logging.INFO if ok else logging.WARNING,
            index=entry.index,
            kind=entry.kind,
            source=entry.source,
            destination=entry.destination,
            status=entry.status.value,
            bytes=entry.bytes,
            objects=entry.objects,
            seconds=entry.duration_s,
            error=entry.error,
        )

    def flush(self, entry: EntryState, deadline: float, event: str = "flush.entry") -> None:
        """Flush one entry to S3. Nothing kept on scratch is given up: only a source that
        is gone (`SOURCE_MISSING`) ends as failed, anything else not done stays pending."""
        result = self.transfer(entry, deadline)
        status = result.status
        if status is EntryStatus.FAILED and result.category != SOURCE_MISSING:
            status = EntryStatus.PENDING
        ok = status in (EntryStatus.DONE, EntryStatus.SKIPPED)
        self.finish(entry, status, result, event, ok=ok)
