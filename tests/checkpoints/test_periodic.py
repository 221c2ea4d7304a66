"""Which jobs the agent flushes every= and when: registration, due entries, end of a run."""

from __future__ import annotations

from pathlib import Path

from tests.testbed.clock import FakeClock

from fsx_stage.agent import periodic
from fsx_stage.directives import parse_directive
from fsx_stage.hooks.state import HookRun, HookStatus, JobState, StateStore
from fsx_stage.job import JobIdentity
from fsx_stage.plan import build_plan

WHO = JobIdentity(job_id=7, user="u", uid=1000, gid=1000, job_name="j")


def job_state(*directives: str, restart: int = 0) -> JobState:
    plan = build_plan([parse_directive(d) for d in directives], WHO, None)
    return JobState(
        job_id=7,
        user="u",
        uid=1000,
        gid=1000,
        restart_count=restart,
        plan=plan.model_dump(mode="json"),
        prolog=HookRun(status=HookStatus.DONE, started_at=990.0, finished_at=1000.0),
    )


EVERY = "checkpoint,/fsx/u/a/,s3://bkt/a/,every=60s"
ONLY_AT_END = "checkpoint,/fsx/u/b/,s3://bkt/b/"


def test_only_jobs_with_every_are_registered_for_their_host(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    assert not periodic.register(store, job_state(ONLY_AT_END))
    assert periodic.registrations(store, periodic.this_host()) == []
    assert periodic.register(store, job_state(EVERY, ONLY_AT_END))
    (record,) = periodic.registrations(store, periodic.this_host())
    assert (record.job_id, record.restart_count) == (7, 0)
    assert periodic.registrations(store, "another-node") == []  # a shared state_dir
    periodic.unregister(store, 7)
    assert periodic.registration(store, 7) is None


def test_an_entry_is_due_every_seconds_after_the_start_or_its_last_generation() -> None:
    state = job_state(EVERY, ONLY_AT_END)
    assert periodic.every_entries(state) == {1: 60}
    assert periodic.due_entries(state, {}, FakeClock(1059.0)) == []
    assert periodic.due_entries(state, {}, FakeClock(1060.0)) == [1]
    state.note_generation(1, {"generation": 1, "created_at": 1070.0}, by="agent request")
    assert periodic.due_entries(state, {}, FakeClock(1100.0)) == []  # a request resets the period
    assert periodic.due_entries(state, {}, FakeClock(1130.0)) == [1]
    assert periodic.due_entries(state, {1: 1125.0}, FakeClock(1130.0)) == []  # a failed attempt


def test_a_restored_generation_does_not_count_as_this_runs_flush() -> None:
    state = job_state(EVERY)
    state.note_generation(1, {"generation": 4, "created_at": 5000.0, "restored": True}, by="prolog")
    assert periodic.due_entries(state, {}, FakeClock(1060.0)) == [1]


def test_a_registration_ends_with_its_run_not_before() -> None:
    record = periodic.Registration(job_id=7, host="n", restart_count=1, registered_at=0.0)
    running = job_state(EVERY, restart=1)
    assert not periodic.is_over(record, running)
    assert periodic.is_over(record, None)  # its state is gone
    ended = running.model_copy(update={"epilog": HookRun(status=HookStatus.RUNNING)})
    assert periodic.is_over(record, ended)  # the final flush is the Epilog's
    earlier = job_state(EVERY, restart=0).model_copy(
        update={"epilog": HookRun(status=HookStatus.DONE)}
    )
    assert not periodic.is_over(record, earlier)  # the requeued run's Prolog comes next
    assert periodic.is_over(record, job_state(EVERY, restart=2))
