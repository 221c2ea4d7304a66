"""Who and what a job is, as far as staging cares (filled by the hooks from Slurm)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from fsx_stage.patterns import NO_VAL_ARRAY_TASK_ID


class JobIdentity(BaseModel):
    """A Slurm job's identity: the values for ``%`` patterns, ``{user}``/``{account}``
    templates and policy rules, and the uid/gid/groups every file access runs as."""

    model_config = ConfigDict(frozen=True)

    job_id: int
    user: str
    uid: int
    gid: int
    groups: tuple[int, ...] = ()
    account: str | None = None
    job_name: str
    array_job_id: int | None = None
    array_task_id: int | None = None

    @property
    def is_array_task(self) -> bool:
        return self.array_task_id is not None

    def pattern_values(self) -> dict[str, str]:
        """Values of the Slurm filename patterns, as slurmstepd gives them for ``--output``."""
        if self.array_task_id is None:
            master, task = self.job_id, NO_VAL_ARRAY_TASK_ID
        else:
            master = self.array_job_id if self.array_job_id is not None else self.job_id
            task = self.array_task_id
        return {
            "j": str(self.job_id),
            "u": self.user,
            "x": self.job_name,
            "A": str(master),
            "a": str(task),
        }

    def all_gids(self) -> frozenset[int]:
        """The primary and supplementary group ids."""
        return frozenset((self.gid, *self.groups))
