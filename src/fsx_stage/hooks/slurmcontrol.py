"""The Slurm commands the hooks run, as one collaborator they are given.

`SlurmCommands` runs the real ``scontrol``/``scancel`` (`slurmctl`, `jobinfo`); tests
give the hooks a recording `SlurmControl` instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from fsx_stage.hooks import jobinfo, slurmctl


class SlurmControl(Protocol):
    def show_job(self, job_id: int, env: Mapping[str, str] | None) -> str:
        """``scontrol show job -o``'s line; raises `jobinfo.JobInfoError`."""
        ...

    def set_admin_comment(self, job_id: int, text: str, env: Mapping[str, str] | None) -> None:
        """Raises `slurmctl.SlurmCommandError`, as the two below."""
        ...

    def cancel_job(self, job_id: int, env: Mapping[str, str] | None) -> None: ...

    def requeue_hold(self, job_id: int, env: Mapping[str, str] | None) -> None: ...


class SlurmCommands:
    """The cluster's own commands."""

    def show_job(self, job_id: int, env: Mapping[str, str] | None) -> str:
        return jobinfo.scontrol_show_job(job_id, env)

    def set_admin_comment(self, job_id: int, text: str, env: Mapping[str, str] | None) -> None:
        slurmctl.set_admin_comment(job_id, text, env)

    def cancel_job(self, job_id: int, env: Mapping[str, str] | None) -> None:
        slurmctl.cancel_job(job_id, env)

    def requeue_hold(self, job_id: int, env: Mapping[str, str] | None) -> None:
        slurmctl.requeue_hold(job_id, env)


SLURM: SlurmControl = SlurmCommands()
