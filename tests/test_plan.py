"""Building a job's plan: pattern expansion, resolution, policy, stage-in and flush sets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fsx_stage.config import parse_config
from fsx_stage.directives import Kind, When, parse_directive
from fsx_stage.job import JobIdentity
from fsx_stage.plan import Direction, PlanError, StagePlan, build_plan

JOB = JobIdentity(job_id=42, user="alice", uid=1000, gid=1000, account="chem", job_name="train")
ARRAY_TASK = JOB.model_copy(update={"job_id": 57, "array_job_id": 50, "array_task_id": 7})
CONFIG = parse_config(
    {
        "scratch_roots": ["/fsx/{user}/"],
        "s3": {
            "allow": [
                {
                    "bucket": "bkt",
                    "prefix": "u/{user}/",
                    "users": ["*"],
                    "access": ["read", "write"],
                }
            ]
        },
    }
)


def plan(*texts: str, job: JobIdentity = JOB, config: object = None) -> StagePlan:
    return build_plan([parse_directive(t) for t in texts], job, config)  # type: ignore[arg-type]


def only(*texts: str, job: JobIdentity = JOB) -> tuple[str, str]:
    (entry,) = plan(*texts, job=job).entries
    return entry.source, entry.destination


def test_patterns_expand_for_the_job() -> None:
    assert only("in,s3://bkt/%u/%x-%j/,/fsx/%u/%j/") == (
        "s3://bkt/alice/train-42/",
        "/fsx/alice/42/",
    )


def test_literal_percent() -> None:
    assert only("in,s3://bkt/100%%,/fsx/x")[0] == "s3://bkt/100%"


def test_array_patterns() -> None:
    assert only("in,s3://bkt/%A_%a/,/fsx/%j/", job=ARRAY_TASK) == ("s3://bkt/50_7/", "/fsx/57/")


def test_array_patterns_outside_an_array_follow_slurm() -> None:
    # slurmstepd gives %A = job id and %a = NO_VAL (4294967294) for a non-array job.
    assert only("in,s3://bkt/%A_%a,/fsx/x")[0] == "s3://bkt/42_4294967294"


def test_object_into_a_directory_gets_its_basename() -> None:
    assert only("in,s3://bkt/d/a.h5,/fsx/me/") == ("s3://bkt/d/a.h5", "/fsx/me/a.h5")


def test_file_into_a_prefix_gets_its_basename() -> None:
    assert only("out,/fsx/me/r.csv,s3://bkt/res/") == ("/fsx/me/r.csv", "s3://bkt/res/r.csv")


def test_paths_are_normalised() -> None:
    assert only("in,s3://bkt/p/,/fsx//me/./a/../b/") == ("s3://bkt/p/", "/fsx/me/b/")


def test_job_name_cannot_add_dot_segments_to_keys() -> None:
    with pytest.raises(PlanError, match=r"'\.' or '\.\.' segment"):
        plan("in,s3://bkt/%x/k,/fsx/x", job=JOB.model_copy(update={"job_name": ".."}))


def test_job_name_cannot_turn_an_object_into_a_prefix() -> None:
    with pytest.raises(PlanError, match="changes whether it is a directory"):
        plan("in,s3://bkt/%x,/fsx/x", job=JOB.model_copy(update={"job_name": "a/"}))


def test_job_name_with_control_characters_is_refused() -> None:
    with pytest.raises(PlanError, match="control character U\\+000A"):
        plan("in,s3://bkt/%x,/fsx/x", job=JOB.model_copy(update={"job_name": "a\nb"}))


def test_expanded_bucket_name_is_checked() -> None:
    with pytest.raises(PlanError, match="invalid bucket name"):
        plan("in,s3://b-%u/k,/fsx/x", job=JOB.model_copy(update={"user": "Alice_X"}))


def test_every_failing_directive_is_reported_with_its_index() -> None:
    with pytest.raises(PlanError) as info:
        plan(
            "in,s3://bkt/u/alice/a,/fsx/alice/a",
            "in,s3://other/x,/fsx/alice/x",
            "out,/tmp/x,s3://bkt/u/alice/x",
            config=CONFIG,
        )
    assert [p.index for p in info.value.problems] == [2, 3]
    lines = str(info.value).splitlines()
    assert lines[0].startswith("directive 2: --fsx-stage=in,s3://other/x,/fsx/alice/x: reading")
    assert lines[1].startswith("directive 3: ") and "outside your scratch roots" in lines[1]


def test_without_config_no_policy_applies() -> None:
    assert plan("in,s3://other/x,/tmp/x").entries[0].destination == "/tmp/x"


def test_entry_carries_the_directive() -> None:
    (entry,) = plan("out,/fsx/alice/r/,s3://bkt/u/alice/r/,when=failure,exclude=*.tmp").entries
    assert entry.index == 1
    assert entry.directive == "out,/fsx/alice/r/,s3://bkt/u/alice/r/,when=failure,exclude=*.tmp"
    assert (entry.kind, entry.when, entry.exclude, entry.include) == (
        Kind.OUT,
        When.FAILURE,
        ("*.tmp",),
        (),
    )
    assert entry.is_prefix and not entry.is_download
    assert entry.selects("a.csv") and not entry.selects("x/b.tmp")


SAMPLE = (
    "in,s3://bkt/in/,/fsx/alice/in/",
    "out,/fsx/alice/always,s3://bkt/o/always",
    "out,/fsx/alice/ok,s3://bkt/o/ok,when=success",
    "out,/fsx/alice/bad,s3://bkt/o/bad,when=failure",
    "checkpoint,/fsx/alice/ckpt/,s3://bkt/ckpt/%j/",
)


def test_stage_in_entries_restore_checkpoints_optionally() -> None:
    entries = plan(*SAMPLE).stage_in_entries()
    assert [(e.index, e.source, e.destination, e.optional) for e in entries] == [
        (1, "s3://bkt/in/", "/fsx/alice/in/", False),
        (5, "s3://bkt/ckpt/42/", "/fsx/alice/ckpt/", True),
    ]
    assert all(e.is_download for e in entries)


def test_flush_after_success() -> None:
    entries = plan(*SAMPLE).flush_entries(job_succeeded=True)
    assert [e.index for e in entries] == [2, 3, 5]
    assert entries[-1].source == "/fsx/alice/ckpt/"
    assert entries[-1].destination == "s3://bkt/ckpt/42/"


def test_each_entry_knows_its_direction_and_sides_from_planning() -> None:
    entries = plan(*SAMPLE).entries
    assert [(e.kind, e.direction) for e in entries] == [
        (Kind.IN, Direction.DOWNLOAD),
        (Kind.OUT, Direction.UPLOAD),
        (Kind.OUT, Direction.UPLOAD),
        (Kind.OUT, Direction.UPLOAD),
        (Kind.CHECKPOINT, Direction.UPLOAD),
    ]
    assert [(e.scratch_side, e.s3_side) for e in (entries[0], entries[-1])] == [
        ("/fsx/alice/in/", "s3://bkt/in/"),
        ("/fsx/alice/ckpt/", "s3://bkt/ckpt/42/"),
    ]
    restore = plan(*SAMPLE).stage_in_entries()[-1]
    assert restore.direction is Direction.DOWNLOAD
    assert (restore.scratch_side, restore.s3_side) == ("/fsx/alice/ckpt/", "s3://bkt/ckpt/42/")


def test_flush_after_failure() -> None:
    assert [e.index for e in plan(*SAMPLE).flush_entries(job_succeeded=False)] == [2, 4, 5]


def test_plan_round_trips_through_json() -> None:
    original = plan(*SAMPLE, "in,s3://bkt/p/,/fsx/alice/p/,exclude=*,include=*.h5")
    restored = StagePlan.model_validate_json(original.model_dump_json())
    assert restored == original
    assert restored.entries[-1].selects("a.h5") and not restored.entries[-1].selects("a.txt")


@given(st.text(max_size=20))
def test_no_job_name_can_leave_the_users_prefix_or_root(name: str) -> None:
    job = JOB.model_copy(update={"job_name": name})
    directive = parse_directive("in,s3://bkt/u/%u/%x/,/fsx/%u/%x/")
    try:
        (entry,) = build_plan([directive], job, CONFIG).entries
    except PlanError:
        return
    assert entry.source.startswith("s3://bkt/u/alice/")
    assert entry.destination.startswith("/fsx/alice/")
    assert ".." not in entry.source.split("/")
