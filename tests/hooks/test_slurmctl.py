"""The hooks' Slurm commands: one runner, each caller's own error.

A command that cannot run is a node fault when the hook asks about its job (`JobInfoError`,
the node is drained) and a `SlurmCommandError` when the Prolog tries to stop a job (the
Prolog then falls back on its own). The commands here are small scripts standing in for
``scontrol``/``scancel`` at the paths the hooks call.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fsx_stage.hooks import jobinfo, slurmctl
from fsx_stage.hooks.jobinfo import JobInfoError, first_node, scontrol_show_job
from fsx_stage.hooks.slurmctl import SlurmCommandError, cancel_job, set_admin_comment


def _command(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_the_hook_environment_reaches_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scontrol = _command(tmp_path, "scontrol", 'echo "$*" "SLURM_CONF=$SLURM_CONF"')
    monkeypatch.setattr(jobinfo, "SCONTROL", scontrol)
    line = scontrol_show_job(7, {"SLURM_CONF": "/etc/slurm/test.conf"})
    assert line == "show job -o 7 SLURM_CONF=/etc/slurm/test.conf"


def test_a_missing_scontrol_is_a_job_info_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobinfo, "SCONTROL", str(tmp_path / "absent"))
    with pytest.raises(JobInfoError, match=r"^scontrol show job 7: .*No such file"):
        scontrol_show_job(7, {})
    with pytest.raises(JobInfoError, match=r"^scontrol show hostnames n\[1-2\]: "):
        first_node("n[1-2]", {})


def test_a_failing_scontrol_names_the_job_and_its_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = "echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1"
    monkeypatch.setattr(jobinfo, "SCONTROL", _command(tmp_path, "scontrol", body))
    with pytest.raises(JobInfoError) as info:
        scontrol_show_job(7, {})
    assert str(info.value) == "scontrol show job 7: slurm_load_jobs error: Invalid job id specified"
    with pytest.raises(JobInfoError) as info:
        first_node("n[1-2]", {})
    assert str(info.value) == (
        "cannot expand node list 'n[1-2]': slurm_load_jobs error: Invalid job id specified"
    )


def test_a_missing_scancel_is_a_slurm_command_error_not_a_node_fault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    absent = str(tmp_path / "absent")
    monkeypatch.setattr(slurmctl, "SCANCEL", absent)
    with pytest.raises(SlurmCommandError, match=rf"^{absent}: .*No such file") as info:
        cancel_job(7, {})
    assert not isinstance(info.value, JobInfoError)


def test_a_failing_command_reports_its_stderr_or_its_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scontrol = _command(tmp_path, "scontrol", "echo 'Access/permission denied' >&2; exit 1")
    monkeypatch.setattr(slurmctl, "SCONTROL", scontrol)
    with pytest.raises(SlurmCommandError) as info:
        set_admin_comment(7, "fsx-stage: reason", {})
    assert str(info.value) == f"{scontrol} update JobId=7: Access/permission denied"
    monkeypatch.setattr(slurmctl, "SCANCEL", _command(tmp_path, "scancel", "exit 3"))
    with pytest.raises(SlurmCommandError) as info:
        cancel_job(7, {})
    assert str(info.value).endswith("scancel 7: 3")


def test_a_stopped_job_passes_the_comment_on_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = tmp_path / "argv"
    scontrol = _command(tmp_path, "scontrol", f'printf "%s\\n" "$@" > {seen}')
    monkeypatch.setattr(slurmctl, "SCONTROL", scontrol)
    set_admin_comment(7, "fsx-stage: job 7 not started:\n  bad   directive", {})
    assert seen.read_text().splitlines() == [
        "update",
        "JobId=7",
        "AdminComment=fsx-stage: job 7 not started: bad directive",
    ]


def test_slurm_commands_are_found_where_parallelcluster_puts_them(tmp_path: Path) -> None:
    """slurmd gives the hooks no PATH: without /usr/bin/scontrol (AWS ParallelCluster has
    Slurm in /opt/slurm/bin) the next directory's command is used."""
    distro, pcluster = tmp_path / "usr-bin", tmp_path / "opt-slurm-bin"
    distro.mkdir()
    pcluster.mkdir()
    dirs = (str(distro), str(pcluster))
    assert slurmctl.slurm_command("scontrol", dirs) == str(distro / "scontrol")  # neither: reported
    found = _command(pcluster, "scontrol", "exit 0")
    assert slurmctl.slurm_command("scontrol", dirs) == found
    preferred = _command(distro, "scontrol", "exit 0")
    assert slurmctl.slurm_command("scontrol", dirs) == preferred
    assert slurmctl.SLURM_BIN_DIRS[:2] == ("/usr/bin", "/opt/slurm/bin")
