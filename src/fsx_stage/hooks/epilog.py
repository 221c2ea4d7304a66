"""``fsx-stage epilog``: flush a job's results and checkpoints to S3 after it ends.

Runs as root from slurmd on every node of the allocation after the job ends, whatever
the end (success, failure, time limit, cancellation, preemption, requeue); flushes once,
on the first node. ``out`` entries follow their ``when=``; checkpoints always flush
(incrementally: sync uploads only what changed). Nothing is lost: an entry S3 did not take
(unreachable, refused, time budget spent) stays on scratch untouched and goes to the
pending queue before the epilog returns, and the epilog still exits 0 (an S3 outage is no
reason to take the node down). Scratch is removed, when the site asks for it, only after
every entry is verified in S3.

Did the job succeed? In the Epilog Slurm shows the job as COMPLETING, and on 22.05 the
environment's ``SLURM_JOB_EXIT_CODE2`` stays ``0:0`` even for a time limit or a
cancellation, so the exit status comes from ``scontrol show job``'s ``ExitCode`` (a time
limit or scancel shows as signal 15) together with the environment. A requeued job
(``SLURM_JOB_RESTART_COUNT`` above the Prolog's) did not finish: only its checkpoints flush.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from fsx_stage.directives import Kind
from fsx_stage.hooks import jobinfo
from fsx_stage.hooks.hook import Hook, fresh_state, user_credentials
from fsx_stage.hooks.jobinfo import HookContext
from fsx_stage.hooks.outcome import Fault, HookFault
from fsx_stage.hooks.pending import PendingFlush
from fsx_stage.hooks.planning import carry_over, decode_directives, entry_state, plan_job
from fsx_stage.hooks.runtime import (
    EXIT_NODE_FAULT,
    EXIT_OK,
    run_hook,
)
from fsx_stage.hooks.slurmcontrol import SLURM, SlurmControl
from fsx_stage.hooks.staging import remove_as_user, tell_user
from fsx_stage.hooks.state import EntryState, EntryStatus, HookRun, HookStatus, JobState, Phase
from fsx_stage.plan import StagePlan
from fsx_stage.redaction import redact

_JOB_NOT_RUN = (HookStatus.FAILED_JOB, HookStatus.NODE_FAULT)


def job_succeeded(ctx: HookContext, env: Mapping[str, str], requeued: bool) -> bool:
    if requeued:
        return False
    env_exit, env_signal = jobinfo.parse_exit_code2(env.get("SLURM_JOB_EXIT_CODE2"))
    if env_exit is not None and (env_exit != 0 or env_signal):
        return False
    return jobinfo.job_succeeded(ctx)


class Epilog(Hook):
    name = "epilog"
    #: What a result is owed for until the flush has decided on it.
    intent = "flush interrupted"

    def _run_locked(self, ctx: HookContext) -> int:
        store = self.rt.store
        state = store.load(ctx.job_id) or fresh_state(ctx, [])
        if state.epilog.status is HookStatus.DONE:
            self.log.info("epilog.already_done")
            return EXIT_OK
        if state.mode != self.mode:
            # Staged in by the burst buffer: it flushes after the nodes are released.
            self.log.info("epilog.skip", reason=f"the job is staged by the {state.mode} mode")
            return EXIT_OK
        if state.prolog.status in _JOB_NOT_RUN:
            state.epilog = HookRun(
                status=HookStatus.SKIPPED,
                host=ctx.node_name,
                started_at=time.time(),
                finished_at=time.time(),
                message="the job did not run (its stage-in failed): nothing to flush",
            )
            store.save(state)
            self.log.info(
                "epilog.skip", reason="the job did not run", prolog=state.prolog.status.value
            )
            return EXIT_OK
        requeued = ctx.restart_count > state.restart_count
        succeeded = job_succeeded(ctx, self.env, requeued)
        state.job_succeeded = succeeded
        state.epilog = HookRun(
            status=HookStatus.RUNNING, host=ctx.node_name, started_at=time.time()
        )
        store.save(state)
        self.log.info(
            "epilog.start",
            succeeded=succeeded,
            requeued=requeued,
            exit_code=ctx.exit_code,
            signal=ctx.exit_signal,
        )
        try:
            texts, directives = decode_directives(self.env.get("SPANK_FSX_STAGE", ""))
            plan = plan_job(directives, ctx.identity, self.rt.config)
        except HookFault as fault:
            # The Prolog refuses such a job before it runs; nothing was produced under it.
            state.epilog.status = HookStatus.DONE
            state.epilog.message = f"no flush: {fault.message}"
            state.epilog.finished_at = time.time()
            store.save(state)
            self.log.error("epilog.bad_plan", error=fault.message)
            return EXIT_OK
        state.directives = texts
        state.plan = plan
        fresh = self._flush_states(plan, succeeded, requeued)
        state.replace_phase(Phase.FLUSH, carry_over(fresh, state.phase_entries(Phase.FLUSH)))
        store.save(state)
        cleanup = [] if requeued else self._cleanup_paths(plan)
        remove = self.rt.config.scratch_after_flush == "remove"
        # Intent first: if this hook is killed (PrologEpilogTimeout, node crash) midway,
        # `flush --pending` still knows what is owed. Sync makes the retry cheap.
        owed = [
            e.model_copy(update={"status": EntryStatus.PENDING, "error": self.intent})
            for e in state.phase_entries(Phase.FLUSH)
            if e.status in (EntryStatus.WAITING, EntryStatus.RUNNING, EntryStatus.PENDING)
        ]
        self._save_pending(ctx, state, owed, remove, cleanup)
        try:
            self._flush(ctx, state)
        except HookFault as fault:
            return self._node_fault(ctx, state, fault, remove, cleanup)
        pending = [e for e in state.phase_entries(Phase.FLUSH) if e.status is EntryStatus.PENDING]
        self._save_pending(ctx, state, pending, remove, cleanup)
        if pending:
            self.log.warning(
                "flush.pending",
                entries=len(pending),
                error="; ".join(f"directive {e.index}: {e.error}" for e in pending),
            )
        if not pending and remove and cleanup:
            problems = remove_as_user(user_credentials(ctx), cleanup)
            self.log.info("scratch.removed", paths=cleanup, problems=problems)
        failed = [e for e in state.phase_entries(Phase.FLUSH) if e.status is EntryStatus.FAILED]
        self._tell(ctx, state, failed, pending)  # before "done": whoever waits for it sees it
        state.epilog.status = HookStatus.DONE
        state.epilog.finished_at = time.time()
        if failed or pending:
            state.epilog.message = ", ".join(
                f"{len(group)} entr{'ies' if len(group) != 1 else 'y'} {word}"
                for group, word in ((failed, "failed"), (pending, "pending"))
                if group
            )
        store.save(state)
        self.log.info(
            "epilog.done",
            pending=len(pending),
            seconds=round(time.monotonic() - self.started, 3),
        )
        return EXIT_OK

    def _tell(
        self,
        ctx: HookContext,
        state: JobState,
        failed: list[EntryState],
        pending: list[EntryState],
    ) -> None:
        """A flush that did not reach S3 is told in the job's output file(s), where users
        look first. Not in ``AdminComment``: by now the job has ended, and Slurm refuses
        to update an ended job ("Job has already finished", checked on 22.05)."""
        if not failed and not pending:
            return
        text = flush_problem_text(ctx.job_id, failed, pending)
        written = tell_user(user_credentials(ctx), [ctx.std_out or "", ctx.std_err or ""], text)
        self.log.info("epilog.user_told", files=written)

    def _flush_states(self, plan: StagePlan, succeeded: bool, requeued: bool) -> list[EntryState]:
        wanted = {e.index for e in plan.flush_entries(succeeded)}
        states = []
        for entry in plan.entries:
            if entry.kind is Kind.IN:
                continue
            state = entry_state(entry, Phase.FLUSH)
            if requeued and entry.kind is Kind.OUT:
                state.status = EntryStatus.SKIPPED
                state.error = "job requeued: results flush when it ends"
            elif entry.index not in wanted:
                state.status = EntryStatus.SKIPPED
                state.error = (
                    f"when={entry.when.value} and the job {'succeeded' if succeeded else 'failed'}"
                )
            states.append(state)
        return states

    def _cleanup_paths(self, plan: StagePlan) -> list[str]:
        return [entry.scratch_side for entry in plan.entries]

    def _flush(self, ctx: HookContext, state: JobState) -> None:
        config = self.rt.config
        todo = [e for e in state.phase_entries(Phase.FLUSH) if e.status is EntryStatus.WAITING]
        todo += [
            e
            for e in state.phase_entries(Phase.FLUSH)
            if e.status in (EntryStatus.RUNNING, EntryStatus.PENDING)
        ]
        if not todo:
            return
        setup = self._prepare_transfers(ctx, [e.source for e in todo], need_space=False)
        deadline = self.started + config.timeouts.flush
        steps = self._steps(state, setup)
        for entry in todo:
            steps.flush(entry, deadline)

    def _save_pending(
        self,
        ctx: HookContext,
        state: JobState,
        entries: list[EntryState],
        remove: bool,
        cleanup: list[str],
    ) -> None:
        """Make the pending record say exactly what is owed: this run's ``entries`` plus
        what earlier runs of the job (before a requeue) still owe for other entries."""
        this_run = {(e.index, e.source) for e in state.phase_entries(Phase.FLUSH)}
        owed = [e.model_copy() for e in entries]
        existing = self.rt.pending.load(ctx.job_id)
        if existing is not None:
            owed = [
                e
                for e in existing.entries
                if e.status is EntryStatus.PENDING and (e.index, e.source) not in this_run
            ] + owed
        if not owed:
            self.rt.pending.remove(ctx.job_id)
            return
        ident = ctx.identity
        record = PendingFlush(
            job_id=ident.job_id,
            user=ident.user,
            uid=ident.uid,
            gid=ident.gid,
            groups=ident.groups,
            entries=owed,
            remove_scratch=remove,
            cleanup=cleanup or (existing.cleanup if existing is not None else []),
            last_error="; ".join(f"directive {e.index}: {e.error}" for e in owed if e.error)
            or None,
        )
        self.rt.pending.save(record)

    def _node_fault(
        self,
        ctx: HookContext,
        state: JobState,
        fault: HookFault,
        remove: bool,
        cleanup: list[str],
    ) -> int:
        """No credentials, scratch gone: record everything as pending first, then report."""
        for entry in state.phase_entries(Phase.FLUSH):
            if entry.status in (EntryStatus.WAITING, EntryStatus.RUNNING):
                entry.finish(EntryStatus.PENDING, fault.message, "node")
        pending = [e for e in state.phase_entries(Phase.FLUSH) if e.status is EntryStatus.PENDING]
        self._save_pending(ctx, state, pending, remove, cleanup)
        self._tell(ctx, state, [], pending)
        state.epilog.status = HookStatus.NODE_FAULT
        state.epilog.message = fault.message
        state.epilog.finished_at = time.time()
        self.rt.store.save(state)
        self.log.error("epilog.node_fault", error=fault.message)
        return EXIT_NODE_FAULT if fault.fault is Fault.NODE else EXIT_OK


def flush_problem_text(job_id: int, failed: list[EntryState], pending: list[EntryState]) -> str:
    """One line for a user: which results did not reach S3, and what happens next."""
    parts = [f"directive {e.index} failed: {e.error or 'not flushed'}" for e in failed]
    parts += [f"directive {e.index} pending: {e.error or 'not flushed yet'}" for e in pending]
    text = f"fsx-stage: job {job_id}: not all results reached S3: " + "; ".join(parts)
    if pending:
        text += (
            " -- pending data stays on scratch and is retried by `fsx-stage flush --pending`;"
            f" see `fsx-stage status {job_id}`"
        )
    return redact(text) + "\n"


def run(env: Mapping[str, str], slurm: SlurmControl = SLURM) -> int:
    """The ``fsx-stage epilog`` command."""
    # After a bug the data is still on scratch (the flush was recorded as pending first).
    return run_hook(
        "epilog", env, lambda rt: Epilog(rt, env, slurm).run(), lambda _job, _log: EXIT_OK
    )
