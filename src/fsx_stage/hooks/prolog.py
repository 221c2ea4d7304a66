"""``fsx-stage prolog``: stage a job's inputs and checkpoints in before it starts.

Runs as root from slurmd (``PrologFlags=Alloc``: once per node at allocation time), only
for jobs with ``--fsx-stage`` directives (the ``plugin/prolog`` wrapper exits before
Python otherwise). Stage-in happens once per job, on the allocation's first node (scratch
is shared); the other nodes return at once. Exit status: 0, except for a node fault
(see `fsx_stage.hooks.outcome`), which drains the node and requeues the job.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from fsx_stage.agent import periodic
from fsx_stage.directives import Kind
from fsx_stage.hooks import flush
from fsx_stage.hooks.hook import Hook, fresh_state, is_same_run, user_credentials
from fsx_stage.hooks.jobinfo import HookContext
from fsx_stage.hooks.logging import EventLog
from fsx_stage.hooks.outcome import Fault, HookFault, worst
from fsx_stage.hooks.planning import carry_over, decode_directives, entry_state, plan_job
from fsx_stage.hooks.privileges import UserCredentials
from fsx_stage.hooks.runtime import EXIT_NODE_FAULT, EXIT_OK, run_hook
from fsx_stage.hooks.slurmcontrol import SLURM, SlurmControl
from fsx_stage.hooks.slurmctl import SlurmCommandError
from fsx_stage.hooks.staging import tell_user
from fsx_stage.hooks.state import EntryStatus, HookRun, HookStatus, JobState, Phase
from fsx_stage.redaction import redact


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
            state.plan = plan
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
        steps = self._steps(state, setup)
        faults: list[HookFault] = []
        for entry in state.phase_entries(Phase.STAGE_IN):
            if entry.status in (EntryStatus.DONE, EntryStatus.SKIPPED):
                continue
            result = steps.transfer(entry, deadline)
            ok = result.fault is None
            steps.finish(entry, result.status, result, "stage_in.entry", ok=ok)
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
            self.slurm.set_admin_comment(ctx.job_id, "", self.env)
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
            if entry.kind is Kind.CHECKPOINT and entry.destination in waiting:
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
            self.slurm.set_admin_comment(ctx.job_id, reason, self.env)
            state.admin_comment = reason
            store.save(state)
            if held:
                self.slurm.requeue_hold(ctx.job_id, self.env)
            else:
                self.slurm.cancel_job(ctx.job_id, self.env)
        except SlurmCommandError as exc:
            # The job must not run without its data: as a last resort let Slurm requeue it.
            self.log.error("prolog.cannot_stop_job", error=str(exc))
            state.prolog.status = HookStatus.NODE_FAULT
            store.save(state)
            return EXIT_NODE_FAULT
        return EXIT_OK


def run(env: Mapping[str, str], slurm: SlurmControl = SLURM) -> int:
    """The ``fsx-stage prolog`` command."""
    # A bug must not let the job run without its data: stop the job, keep the node.
    return run_hook(
        "prolog",
        env,
        lambda rt: Prolog(rt, env, slurm).run(),
        lambda job_id, log: _stop_after_internal_error(job_id, env, log, slurm),
    )


def _stop_after_internal_error(
    job_id: int | None, env: Mapping[str, str], log: EventLog, slurm: SlurmControl
) -> int:
    if job_id is None:
        return EXIT_NODE_FAULT
    try:
        slurm.set_admin_comment(
            job_id, "fsx-stage: internal error while staging in; see the node's log", env
        )
        slurm.cancel_job(job_id, env)
    except SlurmCommandError as exc:
        log.error("prolog.cannot_stop_job", error=str(exc))
        return EXIT_NODE_FAULT
    return EXIT_OK
