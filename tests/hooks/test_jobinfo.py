"""The job as the Prolog/Epilog see it: slurmd's environment plus one scontrol line.

The scontrol lines below were captured from the test cluster (Slurm 22.05).
"""

from __future__ import annotations

import subprocess

import pytest

from fsx_stage.hooks import jobinfo
from fsx_stage.hooks.jobinfo import (
    HookContext,
    JobInfoError,
    first_node,
    hook_context,
    is_first_node,
    job_succeeded,
    parse_exit_code2,
    parse_scontrol_job,
)

PLAIN = (
    "JobId=2 JobName=wrap UserId=fsxuser(1001) GroupId=fsxuser(1001) MCS_label=N/A "
    "Priority=4294901758 Nice=0 Account=(null) QOS=(null) JobState=COMPLETING Reason=TimeLimit "
    "Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:15 "
    "RunTime=00:01:05 TimeLimit=00:01:00 NodeList=vm BatchHost=vm NumNodes=1 "
    "WorkDir=/tmp/w AdminComment=fsx-stage: test reason  Comment=cancel  "
    "StdErr=/tmp/w/2.err StdIn=/dev/null StdOut=/tmp/w/2 out.txt Power= "
)
# A user-chosen job name and comment that imitate other fields.
FORGED = (
    "JobId=6 ArrayJobId=5 ArrayTaskId=1 JobName=my job UserId=root(0) x "
    "UserId=fsxuser(1001) GroupId=fsxuser(1001) MCS_label=N/A Priority=1 Nice=0 "
    "Account=proj1 QOS=(null) JobState=RUNNING Reason=None Dependency=(null) Requeue=1 "
    "Restarts=2 BatchFlag=1 Reboot=0 ExitCode=0:0 NodeList=vm "
    "Comment=x StdOut=/etc/shadow  StdErr=/home/u/6.err StdIn=/dev/null "
    "StdOut=/home/u/6.out Power= "
)

ENV = {
    "SLURM_JOB_ID": "6",
    "SLURM_JOB_USER": "fsxuser",
    "SLURM_JOB_UID": "1001",
    "SLURM_JOB_GID": "1001",
    "SLURMD_NODENAME": "vm",
    "SLURM_NODELIST": "vm",
    "SLURM_JOB_RESTART_COUNT": "2",
    "SLURM_JOB_ACCOUNT": "proj1",
}


def test_scontrol_fields_the_hooks_use() -> None:
    job = parse_scontrol_job(PLAIN, "fsxuser", 1001)
    assert job.job_name == "wrap"
    assert job.job_state == "COMPLETING"
    assert job.exit_code == "0:15"
    assert job.restarts == 0
    assert job.node_list == "vm"
    assert job.std_err == "/tmp/w/2.err"
    assert job.std_out == "/tmp/w/2 out.txt"  # a path with a space survives
    assert job.array_job_id is None and job.array_task_id is None


def test_job_name_and_comment_cannot_imitate_fields() -> None:
    job = parse_scontrol_job(FORGED, "fsxuser", 1001)
    assert job.job_name == "my job UserId=root(0) x"
    assert (job.array_job_id, job.array_task_id) == (5, 1)
    assert job.restarts == 2
    assert job.std_out == "/home/u/6.out"  # the genuine, last StdOut


def test_identity_comes_from_the_environment_only() -> None:
    ctx = hook_context(ENV, scontrol_line=FORGED, groups=(1001, 27))
    ident = ctx.identity
    assert (ident.job_id, ident.user, ident.uid, ident.gid) == (6, "fsxuser", 1001, 1001)
    assert ident.groups == (1001, 27)
    assert ident.account == "proj1"
    assert ident.job_name == "my job UserId=root(0) x"
    assert (ident.array_job_id, ident.array_task_id) == (5, 1)
    assert ctx.restart_count == 2
    assert ctx.node_name == "vm" and ctx.node_list == "vm"


def test_no_account_when_the_job_has_none() -> None:
    env = {k: v for k, v in ENV.items() if k != "SLURM_JOB_ACCOUNT"}
    assert hook_context(env).identity.account is None


@pytest.mark.parametrize(
    "missing", ["SLURM_JOB_ID", "SLURM_JOB_UID", "SLURM_JOB_GID", "SLURM_JOB_USER"]
)
def test_missing_identity_is_an_error(missing: str) -> None:
    env = {k: v for k, v in ENV.items() if k != missing}
    with pytest.raises(JobInfoError, match=missing):
        hook_context(env)


def test_exit_code2() -> None:
    assert parse_exit_code2("0:0") == (0, 0)
    assert parse_exit_code2("3:0") == (3, 0)
    assert parse_exit_code2("0:15") == (0, 15)
    assert parse_exit_code2("") == (None, None)
    assert parse_exit_code2("x:1") == (None, None)


def _epilog_ctx(exit_code2: str | None, line: str = PLAIN) -> HookContext:
    env = dict(ENV, SLURM_JOB_ID="2")
    if exit_code2 is not None:
        env["SLURM_JOB_EXIT_CODE2"] = exit_code2
    return hook_context(env, scontrol_line=line)


def test_success_needs_exit_zero_and_no_signal() -> None:
    ok = PLAIN.replace("ExitCode=0:15", "ExitCode=0:0").replace("Reason=TimeLimit", "Reason=None")
    assert job_succeeded(_epilog_ctx("0:0", ok))
    assert not job_succeeded(_epilog_ctx("3:0", ok.replace("ExitCode=0:0", "ExitCode=3:0")))


def test_time_limit_is_not_success_although_the_env_says_0_0() -> None:
    # Slurm 22.05's Epilog environment has SLURM_JOB_EXIT_CODE2=0:0 after a time limit;
    # scontrol's ExitCode=0:15 tells the truth.
    ctx = _epilog_ctx("0:0")
    assert (ctx.exit_code, ctx.exit_signal) == (0, 15)
    assert not job_succeeded(ctx)


def test_env_exit_status_when_scontrol_has_none() -> None:
    line = PLAIN.replace(" ExitCode=0:15", "").replace("Reason=TimeLimit", "Reason=None")
    assert job_succeeded(_epilog_ctx("0:0", line))
    assert not job_succeeded(_epilog_ctx("1:0", line))


def test_unknown_exit_status_is_not_success() -> None:
    line = PLAIN.replace(" ExitCode=0:15", "")
    assert not job_succeeded(_epilog_ctx(None, line))


def test_first_node_of_a_plain_list_needs_no_scontrol() -> None:
    assert first_node("vm") == "vm"
    assert first_node("a1,b2,c3") == "a1"


class _Hostnames:
    """Stands in for ``scontrol show hostnames`` (records that it was asked)."""

    def __init__(self, hosts: list[str]) -> None:
        self.hosts = hosts
        self.asked: list[list[str]] = []

    def __call__(self, argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        self.asked.append(argv)
        return subprocess.CompletedProcess(argv, 0, "\n".join(self.hosts) + "\n", "")


def test_a_bracketed_list_is_expanded_by_scontrol(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _Hostnames(["n1", "n2", "n3"])
    monkeypatch.setattr(subprocess, "run", fake)
    assert first_node("n[1-3]") == "n1"
    assert fake.asked == [[jobinfo.SCONTROL, "show", "hostnames", "n[1-3]"]]


def test_only_the_first_node_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subprocess, "run", _Hostnames(["n1", "n2", "n3"]))
    monkeypatch.setattr(jobinfo, "short_hostname", lambda: "whatever")
    second = hook_context(dict(ENV, SLURMD_NODENAME="n2", SLURM_NODELIST="n[1-3]"))
    first = hook_context(dict(ENV, SLURMD_NODENAME="n1", SLURM_NODELIST="n[1-3]"))
    assert not is_first_node(second)
    assert is_first_node(first)
