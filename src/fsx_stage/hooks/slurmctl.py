"""Slurm client commands from the hooks: one runner, and ending or holding a job.

`run_command` runs ``scontrol``/``scancel`` for every hook module; each caller turns a
failure into its own error (`SlurmCommandError` here, a node fault in `jobinfo`).

Ending or holding a job from the Prolog without draining the node:

A non-zero Prolog exit drains the node and requeues the job: right for a broken node,
wrong for a user's mistake. So for a user error the Prolog exits 0 after

1. setting the job's ``AdminComment`` to the reason (users cannot change it, and it shows
   in ``scontrol show job``), then
2. ``scancel JOBID``: the job ends CANCELLED with ``Reason=Prolog``; the batch script never
   starts (with ``PrologFlags=Alloc`` slurmd launches it only after the Prolog returns,
   and the job is gone by then). Checked on Slurm 22.05; the same RPCs exist in 24.11.

For an S3 outage at stage-in the job is instead requeued held,
``scontrol requeuehold State=SpecialExit JOBID``: it waits in ``SPECIAL_EXIT`` until the
user or an admin runs ``scontrol release JOBID`` once S3 is back.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

#: Where Slurm's client commands are (slurmd runs the hooks without a PATH): the
#: distribution's /usr/bin, AWS ParallelCluster's /opt/slurm/bin, a source build's /usr/local/bin.
SLURM_BIN_DIRS = ("/usr/bin", "/opt/slurm/bin", "/usr/local/bin")


def slurm_command(name: str, dirs: Sequence[str] = SLURM_BIN_DIRS) -> str:
    """The first executable ``DIR/name`` in ``dirs``, else the first candidate (which
    fails when run, reported by the caller)."""
    for directory in dirs:
        path = Path(directory) / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return str(Path(dirs[0]) / name)


SCONTROL = slurm_command("scontrol")
SCANCEL = slurm_command("scancel")
COMMAND_TIMEOUT_S = 30.0
MAX_COMMENT = 900  # Slurm truncates long comments; keep the reason readable


class SlurmCommandError(Exception):
    """A Slurm client command failed; the message has its stderr."""


def run_command(
    argv: Sequence[str], env: Mapping[str, str] | None, error: type[Exception], what: str
) -> subprocess.CompletedProcess[str]:
    """Run a Slurm client command in ``env`` (default: ours), output captured as text.

    A command that cannot start or outlives `COMMAND_TIMEOUT_S` raises
    ``error(f"{what}: {reason}")``; its exit status is the caller's to judge.
    """
    try:
        return subprocess.run(
            list(argv),
            env=dict(env if env is not None else os.environ),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise error(f"{what}: {exc}") from exc


def _run(argv: Sequence[str], env: Mapping[str, str] | None) -> None:
    proc = run_command(argv, env, SlurmCommandError, argv[0])
    if proc.returncode != 0:
        raise SlurmCommandError(f"{' '.join(argv[:3])}: {proc.stderr.strip() or proc.returncode}")


def one_line(text: str, limit: int = MAX_COMMENT) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def set_admin_comment(job_id: int, text: str, env: Mapping[str, str] | None = None) -> None:
    _run([SCONTROL, "update", f"JobId={int(job_id)}", f"AdminComment={one_line(text)}"], env)


def cancel_job(job_id: int, env: Mapping[str, str] | None = None) -> None:
    _run([SCANCEL, str(int(job_id))], env)


def requeue_hold(job_id: int, env: Mapping[str, str] | None = None) -> None:
    _run([SCONTROL, "requeuehold", "State=SpecialExit", str(int(job_id))], env)
