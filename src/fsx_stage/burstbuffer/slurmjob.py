"""What the burst buffer hooks know about a job: only what Slurm says, from its id.

The lua passes nothing but the job id (its other arguments come from SlurmUser, which is
not trusted with root's powers). Identity comes from fixed ``squeue`` fields (numeric uid
and gid, user and account names: no user-controlled text among them); restart count,
output paths and exit code from ``scontrol show job`` parsed as the Prolog does; the
directives from the stored batch script (``scontrol write batch_script``), read the way
sbatch reads it. ``sbatch --bb='#SBATCH --fsx-stage=...'`` lands in that script too.

The result is the environment slurmd gives the Prolog/Epilog, so both run unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping

from fsx_stage.directives import encode_spank_values
from fsx_stage.hooks.jobinfo import JobInfoError, parse_scontrol_job, scontrol_show_job
from fsx_stage.hooks.outcome import Fault, HookFault
from fsx_stage.hooks.slurmctl import SCONTROL, run_command
from fsx_stage.sbatch_script import read_options

SQUEUE = "/usr/bin/squeue"
_IDENTITY_FORMAT = "%U|%G|%u|%a|%P"


def identity_fields(job_id: int, env: Mapping[str, str] | None) -> dict[str, str]:
    """``SLURM_JOB_{UID,GID,USER,ACCOUNT,PARTITION}`` of ``job_id`` from squeue."""
    argv = [SQUEUE, "-h", "--states=all", "-j", str(int(job_id)), "-o", _IDENTITY_FORMAT]
    proc = run_command(argv, env, JobInfoError, f"squeue -j {job_id}")
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or len(lines) != 1:
        raise JobInfoError(f"squeue -j {job_id}: {proc.stderr.strip() or 'no such job'}")
    uid, gid, user, account, partition = lines[0].split("|")
    if not (uid.isdigit() and gid.isdigit() and user):
        raise JobInfoError(f"squeue -j {job_id}: unexpected line {lines[0]!r}")
    fields = {"SLURM_JOB_UID": uid, "SLURM_JOB_GID": gid, "SLURM_JOB_USER": user}
    if account and account != "(null)":
        fields["SLURM_JOB_ACCOUNT"] = account
    if partition and partition != "(null)":
        fields["SLURM_JOB_PARTITION"] = partition
    return fields


def batch_script(job_id: int, env: Mapping[str, str] | None) -> str:
    """The job's stored batch script."""
    argv = [SCONTROL, "write", "batch_script", str(int(job_id)), "-"]
    proc = run_command(argv, env, JobInfoError, f"scontrol write batch_script {job_id}")
    if proc.returncode != 0:
        raise JobInfoError(f"scontrol write batch_script {job_id}: {proc.stderr.strip()}")
    return proc.stdout


def script_directives(script: str) -> list[str]:
    """The ``--fsx-stage`` values of a batch script; a malformed header is the user's error."""
    options = read_options(script)
    if options.errors:
        problem = options.errors[0]
        raise HookFault(Fault.USER, f"batch script line {problem.line}: {problem.message}")
    return [argument.text for argument in options.directives]


def hook_env(job_id: int, env: Mapping[str, str]) -> dict[str, str]:
    """``env`` plus the variables slurmd would give the job's Prolog/Epilog, from Slurm."""
    fields = identity_fields(job_id, env)
    line = scontrol_show_job(job_id, env)
    info = parse_scontrol_job(line, fields["SLURM_JOB_USER"], int(fields["SLURM_JOB_UID"]))
    result = {**env, **fields, "SLURM_JOB_ID": str(int(job_id))}
    result["SLURM_JOB_RESTART_COUNT"] = str(info.restarts or 0)
    result["SPANK_FSX_STAGE"] = encode_spank_values(script_directives(batch_script(job_id, env)))
    for name in ("SLURMD_NODENAME", "SLURM_NODELIST", "SLURM_JOB_NODELIST", "SLURM_JOB_NAME"):
        result.pop(name, None)  # this host stages; nothing of another job's hook leaks in
    return result
