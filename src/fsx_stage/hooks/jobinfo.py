"""What the Prolog/Epilog know about their job, from slurmd's environment and scontrol.

slurmd sets, for the Prolog and Epilog (checked on Slurm 22.05 and in 24.11's source):
``SLURM_JOB_ID``, ``SLURM_JOB_USER``, ``SLURM_JOB_UID``, ``SLURM_JOB_GID``,
``SLURMD_NODENAME``, ``SLURM_NODELIST``, ``SLURM_JOB_RESTART_COUNT``,
``SLURM_JOB_ACCOUNT`` (only when the job has one) and, in the Epilog only,
``SLURM_JOB_EXIT_CODE2`` (``exit:signal`` of the batch script). The identity (user, uid,
gid) is taken from that environment only: it comes from the job credential, whereas
``scontrol show job -o`` prints user-controlled text (job name, comment) that could imitate
any field. scontrol supplies only what the environment lacks: the job name, the array ids,
and the expanded StdOut/StdErr paths; none of them grants anything.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from fsx_stage.hooks.slurmctl import SCONTROL, run_command
from fsx_stage.job import JobIdentity

# Final job states in which the job did not succeed (as printed by scontrol/squeue).
_FAILED_STATES = frozenset(
    {
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
        "SPECIAL_EXIT",
    }
)


class JobInfoError(Exception):
    """The hook environment lacks what identifies the job (not a Slurm hook?)."""


@dataclass(frozen=True)
class HookContext:
    """A job as seen by one Prolog/Epilog invocation."""

    identity: JobIdentity
    node_name: str
    node_list: str
    restart_count: int
    std_out: str | None = None
    std_err: str | None = None
    exit_code: int | None = None  # Epilog: exit status of the batch script
    exit_signal: int | None = None  # Epilog: signal that ended it, 0 if none
    job_state: str | None = None  # from scontrol, when asked

    @property
    def job_id(self) -> int:
        return self.identity.job_id


def _int_env(env: Mapping[str, str], name: str) -> int:
    value = env.get(name, "")
    if not value.isdigit():
        raise JobInfoError(f"{name} is missing or not a number ({value!r})")
    return int(value)


def parse_exit_code2(text: str | None) -> tuple[int | None, int | None]:
    """``"exit:signal"`` (``SLURM_JOB_EXIT_CODE2``, scontrol ``ExitCode=``) to numbers."""
    if not text:
        return None, None
    exit_text, sep, signal_text = text.partition(":")
    if not sep or not exit_text.isdigit() or not signal_text.isdigit():
        return None, None
    return int(exit_text), int(signal_text)


@dataclass(frozen=True)
class ScontrolJob:
    """The few fields of ``scontrol show job -o`` the hooks use."""

    job_name: str = ""
    array_job_id: int | None = None
    array_task_id: int | None = None
    job_state: str | None = None
    exit_code: str | None = None
    restarts: int | None = None
    node_list: str | None = None
    std_out: str | None = None
    std_err: str | None = None


_ARRAY_RE = re.compile(r"^JobId=\d+ ArrayJobId=(\d+) ArrayTaskId=(\d+) ")


def _last_field(line: str, key: str, stop_keys: tuple[str, ...]) -> str | None:
    """Value of the last `` key=`` in ``line``, up to the next of ``stop_keys`` or the end.

    The last occurrence is the genuine one for fields printed after the user's free text
    (Comment precedes StdErr/StdIn/StdOut).
    """
    marker = f" {key}="
    start = line.rfind(marker)
    if start < 0:
        return None
    start += len(marker)
    end = len(line)
    for stop in stop_keys:
        pos = line.find(f" {stop}=", start)
        if 0 <= pos < end:
            end = pos
    return line[start:end].strip()


def _fixed_field(line: str, key: str, after: int) -> str | None:
    match = re.compile(rf" {re.escape(key)}=(\S*)").search(line, after)
    return match.group(1) if match else None


def parse_scontrol_job(line: str, user: str, uid: int) -> ScontrolJob:
    """Parse one ``scontrol show job -o`` line of the job owned by ``user``/``uid``.

    Field order (22.05/24.11): ``JobId [ArrayJobId ArrayTaskId] JobName UserId GroupId ...
    JobState Reason ... ExitCode ... NodeList ... Comment ... StdErr StdIn StdOut Power``.
    The job name ends where `` UserId=<user>(<uid>) GroupId=`` first appears.
    """
    line = line.strip()
    array = _ARRAY_RE.match(line)
    name_at = line.find("JobName=")
    job_name = ""
    after_user = 0
    if name_at >= 0:
        marker = f" UserId={user}({uid}) GroupId="
        end = line.find(marker, name_at)
        if end >= 0:
            job_name = line[name_at + len("JobName=") : end]
            after_user = end + len(marker)
    restarts = _fixed_field(line, "Restarts", after_user)
    node_list = _fixed_field(line, "NodeList", after_user)
    return ScontrolJob(
        job_name=job_name,
        array_job_id=int(array.group(1)) if array else None,
        array_task_id=int(array.group(2)) if array else None,
        job_state=_fixed_field(line, "JobState", after_user),
        exit_code=_fixed_field(line, "ExitCode", after_user),
        restarts=int(restarts) if restarts and restarts.isdigit() else None,
        node_list=node_list if node_list and node_list != "(null)" else None,
        std_err=_last_field(line, "StdErr", ("StdIn", "StdOut", "Power")),
        std_out=_last_field(line, "StdOut", ("Power", "TresPerNode", "TresPerTask", "MailUser")),
    )


def scontrol_show_job(job_id: int, env: Mapping[str, str] | None = None) -> str:
    """``scontrol show job -o JOBID`` (one line); raises `JobInfoError` when it fails."""
    what = f"scontrol show job {job_id}"
    proc = run_command([SCONTROL, "show", "job", "-o", str(int(job_id))], env, JobInfoError, what)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise JobInfoError(f"{what}: {proc.stderr.strip()}")
    return proc.stdout.strip().splitlines()[0]


def short_hostname() -> str:
    return socket.gethostname().split(".")[0]


def first_node(node_list: str, env: Mapping[str, str] | None = None) -> str:
    """The first host of a Slurm hostlist; ``scontrol show hostnames`` only for ranges."""
    node_list = node_list.strip()
    if "[" not in node_list:
        return node_list.split(",")[0].strip()
    argv = [SCONTROL, "show", "hostnames", node_list]
    proc = run_command(argv, env, JobInfoError, f"scontrol show hostnames {node_list}")
    hosts = proc.stdout.split()
    if proc.returncode != 0 or not hosts:
        raise JobInfoError(f"cannot expand node list {node_list!r}: {proc.stderr.strip()}")
    return hosts[0]


def hook_context(
    env: Mapping[str, str],
    *,
    scontrol_line: str | None = None,
    groups: tuple[int, ...] = (),
) -> HookContext:
    """Build the job's context from the hook environment plus one scontrol line."""
    job_id = _int_env(env, "SLURM_JOB_ID")
    uid = _int_env(env, "SLURM_JOB_UID")
    gid = _int_env(env, "SLURM_JOB_GID")
    user = env.get("SLURM_JOB_USER", "")
    if not user:
        raise JobInfoError("SLURM_JOB_USER is missing")
    info = parse_scontrol_job(scontrol_line, user, uid) if scontrol_line else ScontrolJob()
    account = env.get("SLURM_JOB_ACCOUNT") or None
    identity = JobIdentity(
        job_id=job_id,
        user=user,
        uid=uid,
        gid=gid,
        groups=groups,
        account=account,
        job_name=env.get("SLURM_JOB_NAME") or info.job_name,
        array_job_id=info.array_job_id,
        array_task_id=info.array_task_id,
    )
    restart_text = env.get("SLURM_JOB_RESTART_COUNT", "")
    restart_count = int(restart_text) if restart_text.isdigit() else (info.restarts or 0)
    # scontrol first: on 22.05 the Epilog's SLURM_JOB_EXIT_CODE2 says 0:0 after a time
    # limit or a cancellation, while scontrol's ExitCode shows the signal.
    exit_code, exit_signal = parse_exit_code2(info.exit_code)
    if exit_code is None:
        exit_code, exit_signal = parse_exit_code2(env.get("SLURM_JOB_EXIT_CODE2"))
    return HookContext(
        identity=identity,
        node_name=env.get("SLURMD_NODENAME") or short_hostname(),
        node_list=env.get("SLURM_NODELIST")
        or env.get("SLURM_JOB_NODELIST")
        or info.node_list
        or "",
        restart_count=restart_count,
        std_out=info.std_out,
        std_err=info.std_err,
        exit_code=exit_code,
        exit_signal=exit_signal,
        job_state=info.job_state,
    )


def job_succeeded(context: HookContext) -> bool:
    """Whether the batch script ended with exit status 0 and no signal.

    Slurm's Epilog sees the job as COMPLETING, so the final state is not known yet; the
    exit status (``SLURM_JOB_EXIT_CODE2`` on 22.05+, else scontrol's ``ExitCode``) is what
    tells success from failure: a time limit, a cancellation or a preemption ends the
    script with a signal. An unknown status counts as failure.
    """
    if context.exit_code is None:
        return False
    if context.job_state in _FAILED_STATES:
        return False
    return context.exit_code == 0 and not context.exit_signal


def is_first_node(context: HookContext, env: Mapping[str, str] | None = None) -> bool:
    """True on the allocation's first node, where staging runs (scratch is shared)."""
    if not context.node_list:
        return True  # a single-node view: nothing says otherwise
    return first_node(context.node_list, env) in (context.node_name, short_hostname())
