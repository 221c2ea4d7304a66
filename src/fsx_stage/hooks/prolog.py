"""``fsx-stage prolog``: stage a job's inputs and checkpoints in before it starts.

Runs as root from slurmd (``PrologFlags=Alloc``: once per node at allocation time), only
for jobs with ``--fsx-stage`` directives (the ``plugin/prolog`` wrapper exits before
Python otherwise). Stage-in happens once per job, on the allocation's first node (scratch
is shared); the other nodes return at once. Exit status: 0, except for a node fault
(see `fsx_stage.hooks.outcome`), which drains the node and requeues the job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Literal

from fsx_stage.agent import periodic
from fsx_stage.hooks import flush, jobinfo
from fsx_stage.hooks.jobinfo import HookContext, JobInfoError
from fsx_stage.hooks.logging import EventLog, redact
from fsx_stage.hooks.outcome import Fault, HookFault, worst
from fsx_stage.hooks.planning import carry_over, decode_directives, entry_state, plan_job
from fsx_stage.hooks.privileges import UserCredentials
from fsx_stage.hooks.runtime import (
    EXIT_NODE_FAULT,
    EXIT_OK,
    Runtime,
    TransferSetup,
    check_scratch,
    encryption,
    resolve_credentials,
    run_hook,
    s3_settings,
    transfer_options,
)
from fsx_stage.hooks.slurmctl import SlurmCommandError, cancel_job, requeue_hold, set_admin_comment
from fsx_stage.hooks.staging import EntryResult, run_entry, tell_user
from fsx_stage.hooks.state import EntryState, EntryStatus, HookRun, HookStatus, JobState, Phase
from fsx_stage.policy import Policy


def context(env: Mapping[str, str], log: EventLog | None = None) -> HookContext:
    """The job's context: environment first, one ``scontrol show job`` for the rest."""
    job_id = int(env.get("SLURM_JOB_ID", "0") or 0)
    line = None
    try:
        line = jobinfo.scontrol_show_job(job_id, env)
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

    def __init__(self, rt: Runtime, env: Mapping[str, str]) -> None:
        self.rt = rt
        self.env = env
        self.log = rt.log
        self.started = time.monotonic()

    def run(self) -> int:
        ctx = context(self.env, self.log)
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
        """The node's part first (scratch usable, S3 credentials, SSE-C key: each a node
        `HookFault`), then the job user's credentials for the transfer worker."""
        config = self.rt.config
        check_scratch(config, scratch_paths, need_space=need_space)
        credentials = resolve_credentials(config)
        s3 = s3_settings(config, credentials)
        enc = encryption(config)
        policy = Policy(config)
        return TransferSetup(
            user=user_credentials(ctx),
            s3=s3,
            encryption=enc,
            umask_for=lambda path: policy.umask_for(path, ctx.identity),
        )

    def _transfer(
        self, state: JobState, entry: EntryState, setup: TransferSetup, deadline: float
    ) -> EntryResult:
        """Run one entry's transfer as the job user until ``deadline``; the entry keeps
        its counts, its end is the caller's to judge (`_finish`)."""
        entry.start()
        self.rt.store.save(state)
        options = transfer_options(self.rt.config, setup.encryption, filters=entry.filters)
        saved = time.monotonic()

        def live(counts: dict[str, int]) -> None:
            # What `status` shows while the entry runs; the file is rewritten (fsync)
            # at most every SAVE_LIVE_EVERY_S seconds, whatever the object count.
            nonlocal saved
            entry.bytes, entry.objects = counts.get("bytes", 0), counts.get("objects", 0)
            if time.monotonic() - saved >= SAVE_LIVE_EVERY_S:
                saved = time.monotonic()
                self.rt.store.save(state)

        umask = setup.umask_for(entry.destination)
        budget = deadline - time.monotonic()
        result = run_entry(
            setup.user, entry, options, setup.s3, budget, umask=umask, on_progress=live
        )
        entry.bytes, entry.objects = result.bytes, result.objects
        entry.skipped_objects = result.skipped
        if result.generation is not None:
            state.note_generation(entry.index, result.generation, by=self.name)
        return result

    def _finish(
        self,
        state: JobState,
        entry: EntryState,
        status: EntryStatus,
        result: EntryResult,
        event: str,
        *,
        ok: bool,
    ) -> None:
        """Save the entry's end, then log ``event`` (a warning unless ``ok``)."""
        entry.finish(status, result.error, result.category)
        self.rt.store.save(state)
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


class Prolog(Hook):
    name = "prolog"

    def _run_locked(self, ctx: HookContext) -> int:
        store = self.rt.store
        raw = self.env.get("SPANK_FSX_STAGE", "")
        state = store.load(ctx.job_id)
        if state is not None and is_same_run(state, ctx):
            if state.prolog.status is HookStatus.DONE:
                self.log.info("prolog.already_done")
                return EXIT_OK
            self.log.info("prolog.resume", previous=state.prolog.status.value)
        else:
            # A comment set by an earlier run (held) is cleared once this run gets its data.
            comment = state.admin_comment if state is not None else None
            generations = state.generations if state is not None else []
            state = fresh_state(ctx, [])
            state.admin_comment = comment
            state.generations = generations  # `status` lists those of earlier runs too
        state.mode = self.mode
        state.prolog = HookRun(
            status=HookStatus.RUNNING, host=ctx.node_name, started_at=time.time()
        )
        store.save(state)
        self.log.info("prolog.start", user=ctx.identity.user, restart=ctx.restart_count)
        try:
            texts, directives = decode_directives(raw)
            state.directives = texts
            plan = plan_job(directives, ctx.identity, self.rt.config)
            state.plan = plan.model_dump(mode="json")
            fresh = [entry_state(e, Phase.STAGE_IN) for e in plan.stage_in_entries()]
            state.replace_phase(Phase.STAGE_IN, carry_over(fresh, state.entries))
            store.save(state)
            self._stage_in(ctx, state)
        except HookFault as fault:
            return self._fault(ctx, state, fault)
        state.prolog.status = HookStatus.DONE
        state.prolog.finished_at = time.time()
        store.save(state)
        if self.mode == "hooks":  # the burst buffer's staging host is not where it runs
            self._register_periodic(state)
        if state.admin_comment:
            self._clear_comment(ctx, state)
        self.log.info("prolog.done", seconds=round(time.monotonic() - self.started, 3))
        return EXIT_OK

    def _register_periodic(self, state: JobState) -> None:
        """Hand the job's ``every=`` checkpoints to this node's agent (docs/checkpoints.md)."""
        if periodic.register(self.rt.store, state):
            self.log.info("prolog.periodic_registered", host=periodic.this_host())

    def _staged_elsewhere(self, ctx: HookContext, state: JobState) -> None:
        """A job the burst buffer staged in runs here: its ``every=`` flushes are this
        node's agent's (under the job's lock, as the staging host writes the state)."""
        with self.rt.store.lock(ctx.job_id):
            current = self.rt.store.load(ctx.job_id)
            running = current is not None and current.prolog.status is HookStatus.DONE
            if running and current is not None and current.epilog.status is HookStatus.NOT_RUN:
                self._register_periodic(current)

    def _stage_in(self, ctx: HookContext, state: JobState) -> None:
        config = self.rt.config
        todo = [e for e in state.phase_entries(Phase.STAGE_IN) if e.status is not EntryStatus.DONE]
        todo = [e for e in todo if e.status is not EntryStatus.SKIPPED]
        if not todo:
            return
        setup = self._prepare_transfers(ctx, [e.destination for e in todo], need_space=True)
        self._protect_pending_checkpoints(ctx, state, setup.user)
        deadline = self.started + config.timeouts.stage_in
        faults: list[HookFault] = []
        for entry in state.phase_entries(Phase.STAGE_IN):
            if entry.status in (EntryStatus.DONE, EntryStatus.SKIPPED):
                continue
            result = self._transfer(state, entry, setup, deadline)
            ok = result.fault is None
            self._finish(state, entry, result.status, result, "stage_in.entry", ok=ok)
            if result.fault is not None:
                faults.append(
                    HookFault(
                        result.fault, f"directive {entry.index}: {entry.source}: {result.error}"
                    )
                )
                if result.fault is Fault.NODE:
                    break
        decisive = worst(f.fault for f in faults)
        if decisive is not None:
            messages = [f.message for f in faults if f.fault is decisive]
            raise HookFault(decisive, "; ".join(messages))

    def _clear_comment(self, ctx: HookContext, state: JobState) -> None:
        """The job runs now: an earlier "held" comment would only mislead."""
        try:
            set_admin_comment(ctx.job_id, "", self.env)
        except SlurmCommandError as exc:
            self.log.warning("prolog.cannot_comment", error=str(exc))
            return
        state.admin_comment = None
        self.rt.store.save(state)

    def _protect_pending_checkpoints(
        self, ctx: HookContext, state: JobState, creds: UserCredentials
    ) -> None:
        """A requeued job whose last checkpoint flush is still pending: flush it now, and if
        S3 still refuses, keep the newer data on scratch instead of restoring older data."""
        record = self.rt.pending.load(ctx.job_id)
        if record is None:
            return
        self.log.info("prolog.pending_flush_first")
        # Half of what is left of the stage-in budget, at most: the stage-in needs the rest.
        left = self.started + self.rt.config.timeouts.stage_in - time.monotonic()
        record = flush.retry(self.rt, record, creds, budget_s=left / 2)
        if record is None:
            return
        waiting = {e.source for e in record.entries if e.status is not EntryStatus.DONE}
        for entry in state.phase_entries(Phase.STAGE_IN):
            if entry.kind == "checkpoint" and entry.destination in waiting:
                entry.status = EntryStatus.SKIPPED
                entry.error = "newer checkpoint on scratch is still waiting to be flushed"
        self.rt.store.save(state)

    def _fault(self, ctx: HookContext, state: JobState, fault: HookFault) -> int:
        store = self.rt.store
        state.prolog.finished_at = time.time()
        state.prolog.message = fault.message
        if fault.fault is Fault.NODE:
            state.prolog.status = HookStatus.NODE_FAULT
            store.save(state)
            self.log.error("prolog.node_fault", error=fault.message)
            return EXIT_NODE_FAULT
        state.prolog.status = HookStatus.FAILED_JOB
        held = fault.fault in (Fault.S3, Fault.SCRATCH_FULL)
        full = fault.fault is Fault.SCRATCH_FULL
        what = "held (scratch full)" if full else "held (S3 unavailable)" if held else "not started"
        reason = redact(f"fsx-stage: job {ctx.job_id} {what}: {fault.message}")
        if held:
            once = "there is room on scratch" if full else "S3 is back"
            reason += f" -- release it with `scontrol release {ctx.job_id}` once {once}"
        state.failure_reason = reason
        store.save(state)
        self.log.error("prolog.job_failed", fault=fault.fault.value, reason=fault.message)
        written = tell_user(
            user_credentials(ctx), [ctx.std_out or "", ctx.std_err or ""], reason + "\n"
        )
        self.log.info("prolog.user_told", files=written)
        try:
            set_admin_comment(ctx.job_id, reason, self.env)
            state.admin_comment = reason
            store.save(state)
            if held:
                requeue_hold(ctx.job_id, self.env)
            else:
                cancel_job(ctx.job_id, self.env)
        except SlurmCommandError as exc:
            # The job must not run without its data: as a last resort let Slurm requeue it.
            self.log.error("prolog.cannot_stop_job", error=str(exc))
            state.prolog.status = HookStatus.NODE_FAULT
            store.save(state)
            return EXIT_NODE_FAULT
        return EXIT_OK


def run(env: Mapping[str, str]) -> int:
    """The ``fsx-stage prolog`` command."""
    # A bug must not let the job run without its data: stop the job, keep the node.
    return run_hook(
        "prolog",
        env,
        lambda rt: Prolog(rt, env).run(),
        lambda job_id, log: _stop_after_internal_error(job_id, env, log),
    )


def _stop_after_internal_error(job_id: int | None, env: Mapping[str, str], log: EventLog) -> int:
    if job_id is None:
        return EXIT_NODE_FAULT
    try:
        set_admin_comment(
            job_id, "fsx-stage: internal error while staging in; see the node's log", env
        )
        cancel_job(job_id, env)
    except SlurmCommandError as exc:
        log.error("prolog.cannot_stop_job", error=str(exc))
        return EXIT_NODE_FAULT
    return EXIT_OK
