"""A job Slurm shows in STAGE_OUT although its flush is done (22.05 and 24.11 alike).

slurmctld recovers a job's stage-out after a restart only from the job's record in
``burst_buffer_lua_state``, written at most every 30 s. Killed (SIGKILL, a
crash) before that save, the restarted slurmctld shows the job ``STAGE_OUT`` and never
runs ``data_out`` again, while the orphaned ``fsx-stage bb data_out`` finishes the flush
anyway. Slurm has no command that ends such a job (observed on 22.05: ``scancel [--hurry]`` is
ignored, ``scontrol release``/``update`` answer "already finished", ``requeue`` runs the
job again); it drops the record ``MinJobAge`` seconds after the job ended, and it already
counts the stage-out as done (``afterburstbuffer`` dependents start). docs/modes.md.
"""

from __future__ import annotations

from collections.abc import Mapping

from fsx_stage.hooks.jobinfo import JobInfoError, parse_scontrol_job, scontrol_show_job
from fsx_stage.hooks.state import EntryStatus, HookStatus, JobState

STAGE_OUT = "STAGE_OUT"


def flush_done(state: JobState) -> bool:
    """The burst buffer flush ran to its end and owes nothing."""
    return (
        state.mode == "burst_buffer"
        and state.epilog.status is HookStatus.DONE
        and all(e.status is not EntryStatus.PENDING for e in state.entries)
    )


def slurm_job_state(state: JobState, env: Mapping[str, str] | None = None) -> str | None:
    """The job's state as slurmctld shows it now; None once Slurm forgot the job."""
    try:
        line = scontrol_show_job(state.job_id, env)
    except JobInfoError:
        return None
    return parse_scontrol_job(line, state.user, state.uid).job_state


def release_hint(state: JobState, env: Mapping[str, str] | None = None) -> str | None:
    """What to tell whoever looks at a job Slurm shows in STAGE_OUT after its flush is done."""
    if not flush_done(state) or slurm_job_state(state, env) != STAGE_OUT:
        return None
    return (
        f"slurm: job {state.job_id} shows STAGE_OUT but its flush is done (every result is in "
        "S3, nothing owed); if it stays so, slurmctld restarted during the stage-out before "
        "saving it and will not finish it: no command ends it (scancel --hurry is ignored), "
        "slurmctld forgets the job MinJobAge seconds after it ended; nothing to do"
    )
