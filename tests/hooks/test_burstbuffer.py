"""The burst_buffer mode's pure parts: the verdict contract, the paths file, the
partition rule, reading directives from a stored batch script, and when a flush counts
as done for a job Slurm still shows in STAGE_OUT."""

from __future__ import annotations

from typing import Literal

import pytest

from fsx_stage.burstbuffer.phases import paths_text
from fsx_stage.burstbuffer.slurmjob import script_directives
from fsx_stage.burstbuffer.stuck import flush_done
from fsx_stage.burstbuffer.verdict import BUSY, OK, Verdict
from fsx_stage.config import BurstBufferConfig
from fsx_stage.directives import parse_directives
from fsx_stage.hooks.outcome import Fault, HookFault
from fsx_stage.hooks.state import EntryState, EntryStatus, HookRun, HookStatus, JobState, Phase
from fsx_stage.job import JobIdentity
from fsx_stage.plan import build_plan
from fsx_stage.plan_entry import Direction


def test_verdict_lines_and_exit_codes() -> None:
    assert (OK.line(), OK.exit_code) == ("OK", 0)
    assert (BUSY.line(), BUSY.exit_code) == ("BUSY", 0)
    error = Verdict.error("fsx-stage: job 7 cannot start:\n  directive 1: no such object")
    assert error.line() == "ERROR fsx-stage: job 7 cannot start: directive 1: no such object"
    assert error.exit_code == 1


def test_paths_name_each_directive_scratch_path_per_kind_in_order() -> None:
    job = JobIdentity(job_id=42, user="alice", uid=1000, gid=1000, job_name="run")
    directives = parse_directives(
        [
            "in,s3://bkt/data/,/fsx/alice/%j/in/",
            "out,/fsx/alice/%j/out/,s3://bkt/results/%j/",
            "in,s3://bkt/ref.fa,/fsx/alice/ref.fa",
            "checkpoint,/fsx/alice/ckpt/,s3://bkt/ckpt/",
        ]
    )
    plan = build_plan(directives, job, None)
    assert paths_text(plan) == (
        "FSX_STAGE_IN_1=/fsx/alice/42/in/\n"
        "FSX_STAGE_OUT_1=/fsx/alice/42/out/\n"
        "FSX_STAGE_IN_2=/fsx/alice/ref.fa\n"
        "FSX_STAGE_CHECKPOINT_1=/fsx/alice/ckpt/\n"
    )


@pytest.mark.parametrize(
    ("partitions", "job", "covered"),
    [
        (("*",), "debug", True),
        (("batch",), "batch", True),
        (("batch",), "debug", False),
        (("batch",), "batch,debug", False),
        (("batch", "debug"), "batch,debug", True),
    ],
)
def test_partitions_the_burst_buffer_stages(
    partitions: tuple[str, ...], job: str, covered: bool
) -> None:
    assert BurstBufferConfig(partitions=partitions).covers(job) is covered


def test_directives_come_from_the_script_header_as_sbatch_reads_it() -> None:
    script = (
        "#!/bin/sh\n"
        "#SBATCH --fsx-stage=in,s3://b/x,/fsx/u/x\n"
        "#SBATCH -J name\n"
        '#SBATCH --fsx-stage "out,/fsx/u/o/,s3://b/o/"\n'
        "echo hi\n"
        "#SBATCH --fsx-stage=in,s3://b/ignored,/fsx/u/y\n"
    )
    assert script_directives(script) == ["in,s3://b/x,/fsx/u/x", "out,/fsx/u/o/,s3://b/o/"]


def test_a_malformed_script_header_is_the_users_error() -> None:
    with pytest.raises(HookFault) as caught:
        script_directives('#!/bin/sh\n#SBATCH --fsx-stage "in,s3://b/x\n')
    assert caught.value.fault is Fault.USER
    assert "batch script line 2" in caught.value.message


def _flushed(
    epilog: HookStatus, entry: EntryStatus, mode: Literal["hooks", "burst_buffer"] = "burst_buffer"
) -> JobState:
    state = JobState(job_id=9, user="alice", uid=1000, gid=1000, mode=mode)
    state.epilog = HookRun(status=epilog)
    state.entries = [
        EntryState(
            index=1,
            phase=Phase.FLUSH,
            kind="out",
            direction=Direction.UPLOAD,
            source="/fsx/alice/9/out/",
            destination="s3://b/o/",
            status=entry,
        )
    ]
    return state


@pytest.mark.parametrize(
    ("state", "done"),
    [
        (_flushed(HookStatus.DONE, EntryStatus.DONE), True),
        (_flushed(HookStatus.DONE, EntryStatus.SKIPPED), True),
        (_flushed(HookStatus.DONE, EntryStatus.PENDING), False),  # S3 still owed
        (_flushed(HookStatus.RUNNING, EntryStatus.RUNNING), False),  # orphan still sending
        (_flushed(HookStatus.DONE, EntryStatus.DONE, mode="hooks"), False),  # the Epilog's
    ],
)
def test_a_flush_is_done_only_when_it_ended_owing_nothing(state: JobState, done: bool) -> None:
    assert flush_done(state) is done
