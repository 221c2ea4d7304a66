"""``fsx-stage bb PHASE JOBID``: the burst buffer phases, built from the Prolog and Epilog.

- ``data_in``: the Prolog's stage-in (same policy, plan, per-entry step, privilege drop,
  state, pending-checkpoint protection) while the job is PENDING; no first-node test (this
  host stages for the whole allocation). A failure is the verdict ``ERROR reason``: Slurm
  holds the job; ``scontrol release`` runs the phase again, which resumes (entries already
  done in this run of the job are not redone). On success the job's ``FSX_STAGE_*``
  variables are written for ``slurm_bb_paths``.
- ``data_out``: the Epilog's flush after the job's nodes are released. An entry S3 did not
  take stays on scratch and goes to the pending queue, and the verdict is ``ERROR``. On
  22.05 that does not hold the job: it ends COMPLETED with the message as its reason
  (``squeue -t all``, ``scontrol show job``), and ``fsx-stage flush --pending`` (the
  site's timer) sends the data later. A replayed data_out retries what is pending.
- ``test_data_in`` / ``test_data_out`` (24.05+): answer from the saved state; ``BUSY``
  while a run of the phase holds the job.
- ``teardown``: forgets the job's paths file; finishes a flush whose ``data_out`` was
  killed (no verdict: 22.05 tears such a job down, still in STAGE_OUT). ``--hurry``
  (``scancel --hurry``, no data_out): every result of a job that ran and is not in S3 yet
  is recorded pending, untouched on scratch, for ``fsx-stage flush --pending``.

Every phase is idempotent under the job's lock: slurmctld replays them after a restart.
At most ``[burst_buffer] max_jobs`` stage-ins and flushes run at once on this host.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from fsx_stage.burstbuffer.slurmjob import hook_env
from fsx_stage.burstbuffer.verdict import BUSY, OK, Verdict
from fsx_stage.directives import Kind
from fsx_stage.hooks import flush
from fsx_stage.hooks.atomic import LockBusy, ensure_dir, locked, remove_durably, write_atomic
from fsx_stage.hooks.epilog import Epilog
from fsx_stage.hooks.hook import context, is_same_run
from fsx_stage.hooks.jobinfo import HookContext, JobInfoError
from fsx_stage.hooks.logging import emergency_log
from fsx_stage.hooks.outcome import Fault, HookFault
from fsx_stage.hooks.prolog import Prolog
from fsx_stage.hooks.runtime import EXIT_NODE_FAULT, Runtime, start
from fsx_stage.hooks.state import EntryStatus, HookStatus, JobState, Phase
from fsx_stage.plan import StagePlan
from fsx_stage.redaction import redact

SLOT_POLL_S = 1.0
FLUSH_RETRY_S = 5.0  # between flush attempts within [burst_buffer] flush_wait


class StageIn(Prolog):
    """The Prolog's stage-in, run on the staging host while the job is pending."""

    name = "bb_data_in"
    mode = "burst_buffer"

    def __init__(self, rt: Runtime, env: Mapping[str, str]) -> None:
        super().__init__(rt, env)
        self.error: str | None = None

    def run(self) -> int:
        ctx = context(self.env, self.log)
        with self.rt.store.lock(ctx.job_id):
            return self._run_locked(ctx)

    def _fault(self, ctx: HookContext, state: JobState, fault: HookFault) -> int:
        """Record the failure; Slurm holds the job with the verdict's message."""
        job_id = ctx.job_id
        state.prolog.finished_at = time.time()
        state.prolog.message = fault.message
        node = fault.fault is Fault.NODE
        state.prolog.status = HookStatus.NODE_FAULT if node else HookStatus.FAILED_JOB
        if fault.fault is Fault.USER:
            what, then = "cannot start", f"fix it, then `scontrol release {job_id}` (or scancel)"
        else:
            what, then = "waits for its data", f"`scontrol release {job_id}` once it is fixed"
            if fault.fault is Fault.S3:
                then = f"`scontrol release {job_id}` once S3 is back"
        reason = redact(f"fsx-stage: job {job_id} {what}: {fault.message} -- {then}")
        state.failure_reason = reason
        self.rt.store.save(state)
        self.log.error("bb.data_in.failed", fault=fault.fault.value, reason=fault.message)
        self.error = reason
        return EXIT_NODE_FAULT


class Flush(Epilog):
    """The Epilog's flush, run on the staging host after the job's nodes are released."""

    name = "bb_data_out"
    mode = "burst_buffer"

    HURRIED = "flush skipped (scancel --hurry): kept on scratch for `flush --pending`"

    def __init__(self, rt: Runtime, env: Mapping[str, str], *, hurry: bool = False) -> None:
        super().__init__(rt, env)
        self.hurry = hurry
        if hurry:
            self.intent = self.HURRIED

    def run(self) -> int:
        ctx = context(self.env, self.log)
        with self.rt.store.lock(ctx.job_id):
            state = self.rt.store.load(ctx.job_id)
            if state is not None and state.epilog.status is HookStatus.DONE:
                return self._retry_pending(ctx)
            return self._run_locked(ctx)

    def _retry_pending(self, ctx: HookContext) -> int:
        """A flush that ran before (replay, ``scontrol release``): retry what it kept."""
        record = self.rt.pending.load(ctx.job_id)
        if record is None or self.hurry:
            self.log.info("epilog.already_done")
            return 0
        self.log.info("bb.data_out.retry_pending", attempts=record.attempts)
        flush.retry(self.rt, record)
        return 0

    def _flush(self, ctx: HookContext, state: JobState) -> None:
        if not self.hurry:
            super()._flush(ctx, state)
            return
        for entry in state.phase_entries(Phase.FLUSH):
            if entry.status in (EntryStatus.WAITING, EntryStatus.RUNNING, EntryStatus.PENDING):
                entry.finish(EntryStatus.PENDING, self.HURRIED, "hurry")
        self.rt.store.save(state)


# -- phases -----------------------------------------------------------------------------


def peek_state(rt: Runtime, job_id: int) -> JobState | None:
    """The job's saved state, unless a run of a phase holds its lock (raises LockBusy)."""
    with rt.store.lock(job_id, wait=False):
        return rt.store.load(job_id)


def data_in(rt: Runtime, env: Mapping[str, str]) -> Verdict:
    with job_slot(rt):
        hook = StageIn(rt, env)
        hook.run()
    if hook.error is not None:
        return Verdict.error(hook.error)
    state = rt.store.load(int(env["SLURM_JOB_ID"]))
    if state is None or state.prolog.status is not HookStatus.DONE:
        return Verdict.error(f"fsx-stage: job {env['SLURM_JOB_ID']}: stage-in did not finish")
    write_paths(rt, state)
    return OK


def test_data_in(rt: Runtime, env: Mapping[str, str]) -> Verdict:
    job_id = int(env["SLURM_JOB_ID"])
    try:
        state = peek_state(rt, job_id)
    except LockBusy:
        return BUSY
    if state is None or not is_same_run(state, context(env)):
        return data_in(rt, env)
    if state.prolog.status is HookStatus.DONE:
        write_paths(rt, state)
        return OK
    if state.prolog.status is HookStatus.RUNNING:
        return data_in(rt, env)  # its run was killed: resume it
    return Verdict.error(state.failure_reason or f"fsx-stage: job {job_id}: stage-in failed")


def data_out(rt: Runtime, env: Mapping[str, str]) -> Verdict:
    """Flush; while S3 refuses, retry for up to ``[burst_buffer] flush_wait`` seconds (the
    site config is read again before each attempt) with the job still in STAGE_OUT."""
    job_id = int(env["SLURM_JOB_ID"])
    give_up = time.monotonic() + rt.config.burst_buffer.flush_wait
    with job_slot(rt):
        Flush(rt, env).run()
        while flush_verdict(rt, job_id).word == "ERROR" and time.monotonic() < give_up:
            time.sleep(min(FLUSH_RETRY_S, max(0.0, give_up - time.monotonic())))
            rt = start(env, job_id)
            Flush(rt, env).run()
    return flush_verdict(rt, job_id)


def test_data_out(rt: Runtime, env: Mapping[str, str]) -> Verdict:
    job_id = int(env["SLURM_JOB_ID"])
    try:
        state = peek_state(rt, job_id)
    except LockBusy:
        return BUSY
    if state is None or state.epilog.status in (HookStatus.NOT_RUN, HookStatus.RUNNING):
        return data_out(rt, env)
    return flush_verdict(rt, job_id)


def teardown(rt: Runtime, env: Mapping[str, str], *, hurry: bool) -> Verdict:
    job_id = int(env["SLURM_JOB_ID"])
    remove_durably(paths_file(rt, job_id))
    if not context(env).node_list:  # the job never ran: no results
        return OK
    if hurry:
        Flush(rt, env, hurry=True).run()
        return OK
    return finish_interrupted_flush(rt, env)


def finish_interrupted_flush(rt: Runtime, env: Mapping[str, str]) -> Verdict:
    """A ``data_out`` killed before its verdict left the flush RUNNING; Slurm 22.05 then
    tears the job down (``Flags=TeardownFailure``) with the job still in STAGE_OUT, so the
    teardown finishes the flush (entries already in S3 are not sent again). The killed run
    recorded what it owed as pending before it sent anything: a teardown killed in turn
    (``OtherTimeout``) leaves the rest to ``flush --pending``."""
    state = rt.store.load(int(env["SLURM_JOB_ID"]))
    if state is None or state.epilog.status is not HookStatus.RUNNING:
        return OK
    rt.log.info("bb.teardown.resume_flush")
    return data_out(rt, env)


def flush_verdict(rt: Runtime, job_id: int) -> Verdict:
    """OK once everything owed is in S3; else ERROR naming what is kept and how to retry."""
    record = rt.pending.load(job_id)
    if record is None:
        return OK
    owed = [e for e in record.entries if e.status is EntryStatus.PENDING]
    if not owed:
        return OK
    what = f"{len(owed)} result{'s' if len(owed) != 1 else ''}"
    return Verdict.error(
        f"fsx-stage: job {job_id}: {what} not in S3 yet, kept on scratch (pending): "
        f"{record.last_error or 'flush interrupted'} -- `fsx-stage flush --pending` "
        "sends it once S3 takes it"
    )


# -- paths (slurm_bb_paths) --------------------------------------------------------------


def paths_file(rt: Runtime, job_id: int) -> Path:
    return rt.config.burst_buffer.paths_dir / f"{int(job_id)}.env"


def paths_text(plan: StagePlan) -> str:
    """``FSX_STAGE_IN_1=/fsx/...`` lines: each directive's scratch path, numbered per kind
    in the order written (checkpoint: the scratch directory it restores into)."""
    counts: dict[Kind, int] = {}
    lines = []
    for entry in plan.entries:
        counts[entry.kind] = counts.get(entry.kind, 0) + 1
        scratch = entry.destination if entry.kind is Kind.IN else entry.source
        name = f"FSX_STAGE_{entry.kind.value.upper()}_{counts[entry.kind]}"
        lines.append(f"{name}={scratch}\n")
    return "".join(lines)


def write_paths(rt: Runtime, state: JobState) -> None:
    if state.plan is None:
        return
    ensure_dir(rt.config.burst_buffer.paths_dir, 0o755)
    write_atomic(paths_file(rt, state.job_id), paths_text(state.plan).encode(), mode=0o644)


# -- concurrency ---------------------------------------------------------------------------


@contextlib.contextmanager
def job_slot(rt: Runtime) -> Iterator[None]:
    """One of ``[burst_buffer] max_jobs`` slots on this host; waits for a free one."""
    directory = ensure_dir(rt.store.root / "bb-slots", 0o700)
    logged = False
    with contextlib.ExitStack() as stack:
        while True:
            for slot in range(rt.config.burst_buffer.max_jobs):
                try:
                    stack.enter_context(locked(directory / f"{slot}.lock", wait=False))
                except LockBusy:
                    continue
                break
            else:
                if not logged:
                    rt.log.info("bb.wait_for_slot", max_jobs=rt.config.burst_buffer.max_jobs)
                    logged = True
                time.sleep(SLOT_POLL_S)
                continue
            break
        yield


# -- the command -----------------------------------------------------------------------------


def run(phase: str, job_id: int, env: Mapping[str, str], *, hurry: bool = False) -> Verdict:
    """Run one phase for ``job_id``; every failure becomes an ``ERROR`` verdict."""
    try:
        rt = start(env, job_id)
    except HookFault as fault:
        emergency_log(job_id).error("bb.cannot_start", error=fault.message)
        return Verdict.error(f"fsx-stage bb {phase}: {fault.message}")
    bodies: dict[str, Callable[[Runtime, Mapping[str, str]], Verdict]] = {
        "data_in": data_in,
        "test_data_in": test_data_in,
        "data_out": data_out,
        "test_data_out": test_data_out,
        "teardown": lambda r, e: teardown(r, e, hurry=hurry),
    }
    try:
        job_env = hook_env(job_id, env)
        partition = job_env.get("SLURM_JOB_PARTITION", "")
        if not rt.config.burst_buffer.covers(partition):
            rt.log.info(f"bb.{phase}.skip", reason="partition staged by the Prolog/Epilog")
            return OK
        verdict = bodies[phase](rt, job_env)
    except HookFault as fault:
        rt.log.error(f"bb.{phase}.failed", error=fault.message)
        verdict = Verdict.error(f"fsx-stage: job {job_id}: {fault.message}")
    except (JobInfoError, OSError) as exc:
        rt.log.exception(f"bb.{phase}.failed", error=str(exc))
        verdict = Verdict.error(f"fsx-stage bb {phase}: {exc}")
    except Exception as exc:
        rt.log.exception(f"bb.{phase}.internal_error", error=str(exc))
        verdict = Verdict.error(f"fsx-stage bb {phase}: internal error; see the staging host's log")
    rt.log.info(f"bb.{phase}.verdict", verdict=verdict.word, message=verdict.message)
    return verdict
